"""Reference devices: speaker cluster, e-board, fleet simulator. They know only the spec (loa.protocol)."""

from loa.devices.content import ContentStore, DirectoryStore, MemoryStore, Programme, StorageError
from loa.devices.core import DeviceStatistics, SpeakerCore
from loa.devices.discovery import DiscoveryError, discover_server
from loa.devices.fleet import FleetError, build_fleet, load_fleet_keys
from loa.devices.fleet_host import FleetHost
from loa.devices.identity import IdentityError, load_or_create_key, parse_key
from loa.devices.playout import PlayoutEntry, PlayoutLog
from loa.devices.runner import DeviceRunner
from loa.devices.settings import Settings
from loa.devices.simclock import SimulatedClock
from loa.devices.simnode import SimulatedDevice, TrueTimeSink
from loa.devices.sinks import CounterSink, FrameInfo, FrameSink, SinkError, SoundCardSink, WavRecorder, open_sound_card

__all__ = [
    "ContentStore",
    "CounterSink",
    "DeviceRunner",
    "DeviceStatistics",
    "DirectoryStore",
    "DiscoveryError",
    "FleetError",
    "FleetHost",
    "FrameInfo",
    "FrameSink",
    "IdentityError",
    "MemoryStore",
    "PlayoutEntry",
    "PlayoutLog",
    "Programme",
    "Settings",
    "SimulatedClock",
    "SimulatedDevice",
    "SinkError",
    "SoundCardSink",
    "SpeakerCore",
    "StorageError",
    "TrueTimeSink",
    "WavRecorder",
    "build_fleet",
    "discover_server",
    "load_fleet_keys",
    "load_or_create_key",
    "open_sound_card",
    "parse_key",
]
