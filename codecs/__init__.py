"""Audio codecs: Opus frames (libopus), file ingest and loudness (PyAV), Ogg Opus for stored programmes."""
