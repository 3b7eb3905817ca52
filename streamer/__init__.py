"""The streamer: sources, per-zone arbitration, RTP/SRTP packetisation and fan-out to devices."""
