"""Coverage-guided fuzz targets for every parser that takes bytes from the network or from a file.

Each module here is one target: ``TestOneInput(data: bytes)`` feeds the input to a parser (directly, or built
into a valid session, signature or page first where plain bytes would never pass a MAC or a checksum) and lets
only the parser's documented error classes pass; any other exception is a crash. A target also names
``MAX_LEN`` (the largest input worth trying) and ``seeds()`` (valid examples, mostly from ``spec/vectors``).
Targets import and run without atheris: the regression corpus in ``tests/fuzz/corpus/<target>/`` is replayed
by the ordinary test suite. ``loa bench fuzz`` (:mod:`loa.bench.fuzz.run`) runs them under atheris/libFuzzer.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["INSTRUMENT", "TARGETS", "load"]

#: Target name -> one line on what it feeds.
TARGETS: dict[str, str] = {
    "datagram": "demultiplexing and the loa datagram header (classify, parse)",
    "session": "handshake, cookie and transport datagrams into a server and a device",
    "transport": "control plaintexts behind a live session's encryption, both directions",
    "control": "control-message decoding and the reliable channel's receive",
    "alert": "signed alert and cancel bodies, raw and signed with the authority key",
    "beacon": "alert beacon datagrams, raw and carrying bodies signed with the authority key",
    "rtp": "RTP packets",
    "rtcp": "compound RTCP packets",
    "srtp": "SRTP/SRTCP unprotect, raw, round trip and with one byte forged",
    "sdp": "SDP text",
    "opus": "Opus packets: TOC framing and libopus decoding",
    "ogg": "Ogg Opus files, raw and with page CRCs recomputed",
    "ingest": "uploaded audio files through PyAV",
    "zone_csv": "zone CSV import checks",
    "media": "uploaded e-board images and text",
    "rrule": "schedule RRULE text, start and validity window",
}

#: Packages instrumented for coverage besides ``loa`` (pure-Python parsers a target leans on). A target may also
#: define ``instrument(instrument_func)`` to instrument chosen functions only (``rrule`` does, for dateutil).
INSTRUMENT: dict[str, tuple[str, ...]] = {"media": ("PIL",)}


def load(name: str) -> ModuleType:
    """The target module ``name``; KeyError for a name not in :data:`TARGETS`."""
    if name not in TARGETS:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
