"""The site file of ``loa streamer --config site.toml``: the server, its zones, devices, authorities, programmes.

The file is TOML. Relative paths in it are relative to the file's own directory. Tables::

    [server]        udp = "HOST:PORT", key_file, content_dir, name, zeroconf, backend, volume, bitrate, fec
    [config]        the values every device gets (PROTOCOL.md section 4.6; the zone path is added per device);
                    its delay_ms is also the playout delay of every join
    [[zone]]        code, name, parent, level, group ("239.x.y.z:PORT": the zone's IP multicast group)
    [[device]]      key (base64 or hex X25519 public key), zone, name, kind ("speaker"/"board"), volume
    [[authority]]   name, public_key (base64 Ed25519) and/or private_key_file (a lab signs alerts itself)
    [[broadcast]]   name, source ("tone"/"demo"/"file"/"live"), file, tone_hz, live ("HOST:PORT"), loop,
                    zones, class, level, policy, delay_ms

Failure semantics: :func:`load_site` raises :class:`SiteConfigError` whose message is one line naming the file,
the entry and the problem, e.g. ``site.toml: [[zone]] #3 (code "44-LT"): unknown parent "44x"``. Nothing is
created or opened here except the file itself (keys are read or created by :mod:`loa.streamer.keys`).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from loa.protocol.control import Config, ConfigValues, encode
from loa.protocol.errors import LocalProtocolError
from loa.streamer.core import MAX_ZONE_DEPTH, parse_group
from loa.streamer.registry import KINDS, DeviceEntry, RegistryError, parse_public_key
from loa.streamer.settings import EncoderSettings, Settings
from loa.streamer.zones import MAX_CODE_LEN, Zone, ZoneError, ZoneTree

__all__ = ["AuthorityConfig", "BroadcastConfig", "ServerConfig", "SiteConfig", "SiteConfigError", "load_site",
           "parse_hostport"]

T = TypeVar("T")
DEFAULT_PORT = 4433
CLASSES = {"normal": 0, "priority": 1, "emergency": 2}
LEVELS = {"commune": 0, "district": 1, "province": 2, "national": 3}
SOURCES = ("tone", "demo", "file", "live")
BACKENDS = ("trio", "asyncio")


class SiteConfigError(ValueError):
    """A site file that cannot be used; the message is one line naming the file, the entry and the problem."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    udp: tuple[str, int] = ("0.0.0.0", DEFAULT_PORT)  # noqa: S104 - a server listens on every interface by default
    key_file: Path = Path("server.key")
    content_dir: Path | None = None
    name: str = "loa"
    zeroconf: bool = True
    backend: str | None = None


@dataclass(frozen=True, slots=True)
class AuthorityConfig:
    name: str
    public_key: bytes | None
    private_key_file: Path | None


@dataclass(frozen=True, slots=True)
class BroadcastConfig:
    name: str
    source: str
    zones: tuple[str, ...]
    file: Path | None = None
    tone_hz: float = 440.0
    live: tuple[str, int] | None = None
    loop: bool = True
    cls: int = 0
    lvl: int = 0
    policy: str = "resume"
    delay_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SiteConfig:
    path: Path
    server: ServerConfig
    settings: Settings
    zones: ZoneTree
    groups: dict[str, str] = field(default_factory=dict)
    devices: tuple[DeviceEntry, ...] = ()
    authorities: tuple[AuthorityConfig, ...] = ()
    broadcasts: tuple[BroadcastConfig, ...] = ()


def parse_hostport(text: str, *, default_port: int | None = None, listen: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` with a numeric address (port 0, any free port, only to ``listen``);
    ValueError with the reason otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected a string HOST:PORT, not {text!r}")
    host, sep, port = text.rpartition(":")
    if not sep and default_port is not None:
        host, port = text, str(default_port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected HOST:PORT with a numeric IP address, not {text!r}") from None
    if not port.isdigit() or not (0 if listen else 1) <= int(port) < 65536:
        raise ValueError(f"port must be {0 if listen else 1}-65535 in {text!r}")
    return host, int(port)


class _Entry:
    """Reads one table of the file, naming it in every error."""

    def __init__(self, file: str, where: str, table: object, allowed: tuple[str, ...]) -> None:
        self.file, self.where = file, where
        if not isinstance(table, dict):
            raise self.error(f"must be a table, not {type(table).__name__}")
        self.table: dict[str, Any] = table
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise self.error(f"unknown key {unknown[0]!r} (known: {', '.join(allowed)})")

    def error(self, problem: str) -> SiteConfigError:
        return SiteConfigError(f"{self.file}: {self.where}: {problem}")

    def get(self, key: str, kind: type[T] | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        if key not in self.table:
            if required:
                raise self.error(f"missing {key!r}")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(f"{key} must be {names}, not {value!r}")
        return value

    def convert(self, key: str, value: Any, convert: Callable[[Any], T]) -> T:
        try:
            return convert(value)
        except (ValueError, ZoneError, RegistryError, LocalProtocolError) as exc:
            raise self.error(f"{key}: {exc}") from None

    def int_range(self, key: str, lo: int, hi: int, default: int | None = None) -> int | None:
        value = self.get(key, int, default)
        if value is not None and not lo <= value <= hi:
            raise self.error(f"{key} must be {lo}-{hi}, not {value}")
        return value  # type: ignore[no-any-return]


def _label(table: object, key: str) -> str:
    if isinstance(table, dict) and isinstance(table.get(key), str):
        return f' ({key} "{table[key]}")'
    return ""


def _items(file: str, data: Mapping[str, Any], name: str) -> list[tuple[str, Any]]:
    tables = data.get(name, [])
    if not isinstance(tables, list):
        raise SiteConfigError(f"{file}: [[{name}]] must be an array of tables ([[{name}]]), not a single table")
    key = {"zone": "code", "device": "name", "authority": "name", "broadcast": "name"}[name]
    return [(f"[[{name}]] #{i}{_label(t, key)}", t) for i, t in enumerate(tables, start=1)]


def load_site(path: str | Path) -> SiteConfig:
    """Read and check a site file (see the module docstring). SiteConfigError (one line) on any problem."""
    file = Path(path)
    name = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteConfigError(f"{file}: cannot read the site file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SiteConfigError(f"{file}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SiteConfigError(f"{name}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"server", "config", "zone", "device", "authority", "broadcast"})
    if unknown:
        raise SiteConfigError(f"{name}: unknown table {unknown[0]!r} (known: server, config, zone, device, "
                              f"authority, broadcast)")
    base = file.resolve().parent
    server, settings = _server(name, data.get("server", {}), data.get("config", {}), base)
    zones, groups = _zones(name, data)
    devices = _devices(name, data, zones)
    authorities = _authorities(name, data, base)
    broadcasts = _broadcasts(name, data, zones, base)
    return SiteConfig(file, server, settings, zones, groups, devices, authorities, broadcasts)


def _server(file: str, table: object, config: object, base: Path) -> tuple[ServerConfig, Settings]:
    entry = _Entry(file, "[server]", table, ("udp", "key_file", "content_dir", "name", "zeroconf", "backend",
                                             "volume", "bitrate", "fec"))
    udp = entry.convert("udp", entry.get("udp", str, f"0.0.0.0:{DEFAULT_PORT}"),
                        lambda v: parse_hostport(v, default_port=DEFAULT_PORT, listen=True))
    backend = entry.get("backend", str)
    if backend is not None and backend not in BACKENDS:
        raise entry.error(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    content_dir = entry.get("content_dir", str)
    server = ServerConfig(
        udp=udp, key_file=base / entry.get("key_file", str, "server.key"),
        content_dir=None if content_dir is None else base / content_dir, name=entry.get("name", str, "loa"),
        zeroconf=entry.get("zeroconf", bool, True), backend=backend,
    )
    values = _config_values(file, config)
    settings = Settings(
        config=values, volume=entry.int_range("volume", 0, 100, 80) or 0,
        delay_ms=values.delay_ms if values.delay_ms is not None else 500,
        encoder=EncoderSettings(bitrate=entry.int_range("bitrate", 6000, 510_000, 32_000) or 32_000,
                                fec=entry.get("fec", bool, True)),
    )
    return server, settings


def _config_values(file: str, table: object) -> ConfigValues:
    known = tuple(f for f in ConfigValues.__dataclass_fields__ if f != "zones")
    entry = _Entry(file, "[config]", table, known)
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.table.items()}
    values.setdefault("delay_ms", 500)
    try:
        config = ConfigValues(**values)
        encode(Config(values=config, id=1))
    except (TypeError, LocalProtocolError) as exc:
        reason = str(exc).removeprefix("invalid config: ").replace("config.values: ", "")
        raise entry.error(reason.replace("config.values.", "")) from None
    return config


def _zones(file: str, data: Mapping[str, Any]) -> tuple[ZoneTree, dict[str, str]]:
    zones: list[Zone] = []
    groups: dict[str, str] = {}
    where: dict[str, str] = {}
    for label, table in _items(file, data, "zone"):
        entry = _Entry(file, label, table, ("code", "name", "parent", "level", "group"))
        code = entry.get("code", str, required=True)
        if code in where:
            raise entry.error(f"zone code {code!r} is already used by {where[code]}")
        where[code] = label
        if not code or len(code.encode()) > MAX_CODE_LEN or code != code.strip():
            raise entry.error(f"code must be 1-{MAX_CODE_LEN} bytes without outer spaces, not {code!r}")
        zone = Zone(code, entry.get("name", str, code), entry.get("parent", str), entry.get("level", str))
        group = entry.get("group", str)
        if group is not None:
            entry.convert("group", group, parse_group)
            groups[code] = group
        zones.append(zone)
    if not zones:
        raise SiteConfigError(f"{file}: no [[zone]]: a site needs at least one zone")
    codes = {z.code for z in zones}
    for zone in zones:
        if zone.parent is not None and zone.parent not in codes:
            raise SiteConfigError(f'{file}: {where[zone.code]}: unknown parent "{zone.parent}"')
    try:
        tree = ZoneTree(zones)
    except ZoneError as exc:
        raise SiteConfigError(f"{file}: [[zone]]: {exc}") from None
    for zone in zones:
        if len(tree.path(zone.code)) > MAX_ZONE_DEPTH:
            raise SiteConfigError(f"{file}: {where[zone.code]}: lies {len(tree.path(zone.code))} levels deep, "
                                  f"at most {MAX_ZONE_DEPTH} fit a device's zone path")
    return tree, groups


def _devices(file: str, data: Mapping[str, Any], zones: ZoneTree) -> tuple[DeviceEntry, ...]:
    out: dict[bytes, DeviceEntry] = {}
    where: dict[bytes, str] = {}
    for label, table in _items(file, data, "device"):
        entry = _Entry(file, label, table, ("key", "zone", "name", "kind", "volume"))
        key = entry.convert("key", entry.get("key", str, required=True), parse_public_key)
        if key in out:
            raise entry.error(f"the same key as {where[key]}")
        zone = entry.get("zone", str, required=True)
        if zone not in zones:
            raise entry.error(f'unknown zone "{zone}"')
        kind = entry.get("kind", str, "speaker")
        if kind not in KINDS:
            raise entry.error(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        out[key] = DeviceEntry(key, zone, name=entry.get("name", str, ""), kind=kind,
                               volume=entry.int_range("volume", 0, 100))
        where[key] = label
    return tuple(out.values())


def _authorities(file: str, data: Mapping[str, Any], base: Path) -> tuple[AuthorityConfig, ...]:
    out = []
    for label, table in _items(file, data, "authority"):
        entry = _Entry(file, label, table, ("name", "public_key", "private_key_file"))
        public = entry.get("public_key", str)
        private = entry.get("private_key_file", str)
        if public is None and private is None:
            raise entry.error("needs public_key, or private_key_file for a lab that signs its own alerts")
        key = None if public is None else entry.convert("public_key", public, parse_public_key)
        out.append(AuthorityConfig(entry.get("name", str, ""), key, None if private is None else base / private))
    return tuple(out)


def _rank(entry: _Entry, key: str, names: Mapping[str, int]) -> int:
    value = entry.get(key, (str, int), 0)
    if isinstance(value, str):
        if value not in names:
            raise entry.error(f"{key} must be one of {', '.join(names)}, not {value!r}")
        return names[value]
    if value not in names.values():
        raise entry.error(f"{key} must be {min(names.values())}-{max(names.values())}, not {value}")
    return int(value)


def _broadcasts(file: str, data: Mapping[str, Any], zones: ZoneTree, base: Path) -> tuple[BroadcastConfig, ...]:
    out: list[BroadcastConfig] = []
    for label, table in _items(file, data, "broadcast"):
        entry = _Entry(file, label, table, ("name", "source", "file", "tone_hz", "live", "loop", "zones", "class",
                                            "level", "policy", "delay_ms"))
        source = entry.get("source", str, required=True)
        if source not in SOURCES:
            raise entry.error(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
        targets = entry.get("zones", list, required=True)
        if not targets or not all(isinstance(z, str) for z in targets):
            raise entry.error("zones must be a non-empty list of zone codes")
        for code in targets:
            if code not in zones:
                raise entry.error(f'unknown zone "{code}"')
        cls = _rank(entry, "class", CLASSES)
        if cls == CLASSES["emergency"]:
            raise entry.error("emergency class plays only with a signed alert; trigger an alert instead")
        policy = entry.get("policy", str, "resume")
        if policy not in ("resume", "drop"):
            raise entry.error(f"policy must be resume or drop, not {policy!r}")
        path = entry.get("file", str)
        if (source == "file") != (path is not None):
            raise entry.error("file is needed with source = \"file\" and only then")
        live = entry.get("live", str)
        if (source == "live") != (live is not None):
            raise entry.error("live = \"HOST:PORT\" is needed with source = \"live\" and only then")
        tone_hz = entry.get("tone_hz", (int, float), 440.0)
        if not 0 < tone_hz < 24_000:
            raise entry.error(f"tone_hz must be between 0 and 24000, not {tone_hz}")
        out.append(BroadcastConfig(
            name=entry.get("name", str, f"broadcast {len(out) + 1}"), source=source, zones=tuple(targets),
            file=None if path is None else base / path, tone_hz=float(tone_hz),
            live=None if live is None else entry.convert("live", live, lambda v: parse_hostport(v, listen=True)),
            loop=entry.get("loop", bool, True), cls=cls, lvl=_rank(entry, "level", LEVELS), policy=policy,
            delay_ms=entry.int_range("delay_ms", 0, 10_000),
        ))
    return tuple(out)
