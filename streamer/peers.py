"""The devices a streamer had sessions with, kept on disk for the restart notices of its next start (PROTOCOL.md
section 3.16).

A restarted server has lost its sessions; what it needs to tell each device at once that it is back is the
device's key, the address its session used and the boot of the server that session was with. The file is a
msgpack map ``{"v": 1, "peers": [[public_key, host, port, boot], ...]}`` (key: 32 bytes; host: an IP address as
text; port 1-65535; boot an unsigned 32-bit value), replaced whole through a temporary file in the same folder,
fsynced, then renamed over the old one: a kill at any moment leaves the old file or the new one, never half of
one.

:func:`load_peers` never raises for what the file holds: a missing file is no peers; a file that cannot be read,
is larger than ``MAX_FILE_BYTES`` or is not such a map gives no peers and the reason; an entry that is not as
above is skipped and counted in the reason. It also removes the temporary files of saves that a kill cut short
(a data directory serves one server at a time). :func:`save_peers` raises OSError (disk full, read-only folder): the
caller logs it and goes on, since the notices only make a restart quicker to notice.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from loa.codecs.atomic import atomic_write

__all__ = ["FORMAT_VERSION", "MAX_FILE_BYTES", "MAX_PEERS", "PEERS_FILE", "Peer", "dump_peers", "load_peers",
           "parse_peers", "save_peers"]

FORMAT_VERSION: Final = 1
PEERS_FILE: Final = "streamer-peers.msgpack"  # its name in a data directory, or beside the server key
MAX_PEERS: Final = 1_000_000
MAX_FILE_BYTES: Final = 64 << 20

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a device's session was, and the boot of the server it was with."""

    address: Address
    boot: int


def dump_peers(peers: dict[bytes, Peer]) -> bytes:
    rows = [[key, peer.address[0], peer.address[1], peer.boot] for key, peer in peers.items()]
    data: bytes = msgpack.packb({"v": FORMAT_VERSION, "peers": rows}, use_bin_type=True)
    return data


def _peer(row: Any) -> tuple[bytes, Peer] | None:
    if not isinstance(row, list) or len(row) != 4:
        return None
    key, host, port, boot = row
    if not (isinstance(key, bytes) and len(key) == 32 and isinstance(host, str) and type(port) is int
            and 1 <= port <= 65535 and type(boot) is int and 0 <= boot < 1 << 32):
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return key, Peer((host, port), boot)


def parse_peers(data: bytes) -> tuple[dict[bytes, Peer], str | None]:
    """The peers a file's bytes hold, and what was wrong with them (None: nothing)."""
    try:
        document = msgpack.unpackb(data, raw=False, strict_map_key=True, max_array_len=MAX_PEERS,
                                   max_map_len=16, max_str_len=64, max_bin_len=64, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        return {}, f"not a peers file ({type(exc).__name__})"
    if not isinstance(document, dict) or document.get("v") != FORMAT_VERSION or not isinstance(
            document.get("peers"), list):
        return {}, f"not a version {FORMAT_VERSION} peers file"
    peers: dict[bytes, Peer] = {}
    skipped = 0
    for row in document["peers"]:
        parsed = _peer(row)
        if parsed is None:
            skipped += 1
        else:
            peers[parsed[0]] = parsed[1]
    return peers, (f"{skipped} malformed entries skipped" if skipped else None)


def load_peers(path: Path) -> tuple[dict[bytes, Peer], str | None]:
    """The peers saved at ``path``, and what was wrong (module docstring); never raises."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        _remove_temporaries(path)
        return {}, None
    except OSError as exc:
        return {}, f"cannot be read ({exc.strerror or type(exc).__name__})"
    _remove_temporaries(path)
    if len(data) > MAX_FILE_BYTES:
        return {}, f"larger than {MAX_FILE_BYTES} bytes"
    return parse_peers(data)


def _remove_temporaries(path: Path) -> None:
    try:
        for left in path.parent.glob(f".{path.name}.*.tmp"):  # atomic_write's temporary files
            left.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only folder: nothing will be saved there either


def save_peers(path: Path, peers: dict[bytes, Peer]) -> None:
    """Replace the file at ``path`` with ``peers`` (module docstring); raises OSError and then leaves the old file
    as it was."""
    atomic_write(path, dump_peers(peers))
