"""Audio codecs: Opus frames (libopus), file ingest and loudness (PyAV), Ogg Opus for stored programmes."""

from loa.codecs.audio import Audio, SampleType, frames
from loa.codecs.errors import (
    CodecError,
    ConfigError,
    CorruptPacketError,
    EncodeError,
    FrameError,
    IngestError,
    OggOpusError,
)
from loa.codecs.ingest import load_audio
from loa.codecs.oggopus import OggOpusInfo, OggOpusPacket, Tags, read_ogg_opus, write_ogg_opus
from loa.codecs.opus import (
    FRAME_DURATIONS_MS,
    SAMPLE_RATE,
    Application,
    OpusDecoder,
    OpusEncoder,
    frame_samples,
    libopus_version,
)
from loa.codecs.packet import MAX_PACKET_SAMPLES, packet_samples
from loa.codecs.programme import EncodedProgramme, encode_file_to_ogg_opus
from loa.codecs.testsignal import demo_programme, tone

__all__ = [
    "FRAME_DURATIONS_MS",
    "MAX_PACKET_SAMPLES",
    "SAMPLE_RATE",
    "Application",
    "Audio",
    "CodecError",
    "ConfigError",
    "CorruptPacketError",
    "EncodeError",
    "EncodedProgramme",
    "FrameError",
    "IngestError",
    "OggOpusError",
    "OggOpusInfo",
    "OggOpusPacket",
    "OpusDecoder",
    "OpusEncoder",
    "SampleType",
    "Tags",
    "demo_programme",
    "encode_file_to_ogg_opus",
    "frame_samples",
    "frames",
    "libopus_version",
    "load_audio",
    "packet_samples",
    "read_ogg_opus",
    "tone",
    "write_ogg_opus",
]
