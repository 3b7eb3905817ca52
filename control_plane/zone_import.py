"""Import a province's administrative tree from CSV: all rows or none, every bad row named by its line.

The file is UTF-8 (a byte-order mark is ignored) with one zone per row: ``code, name, parent[, level]``. A first
row naming its columns (``code,name,parent,level``, or the Vietnamese ``mã,tên,mã cha,cấp``) is a header and may
order the columns freely; without one the columns are positional. ``parent`` is empty for a root. Rows may come
in any order. A code that exists already is updated (name, level, and parent: the zone moves with its subtree;
an empty or absent level keeps the stored one); a new code is created. Names are stored in Unicode NFC.

Failure semantics: :func:`import_csv` raises :class:`InvalidError` listing every problem as ``{line, message}``
(encoding, columns, codes, names, duplicates, unknown parents, cycles, depth) and writes nothing; when any row
lies outside the importer's scope it raises :class:`ForbiddenError` with the same list instead;
otherwise it writes every row and one audit entry in the caller's transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from loa.control_plane import audit
from loa.control_plane.auth import Actor
from loa.control_plane.db import Tx
from loa.control_plane.db.schema import zones
from loa.control_plane.errors import ForbiddenError, InvalidError
from loa.control_plane.zones import MAX_DEPTH, ZoneRecord, apply_rows, check_code, check_level, check_name
from loa.streamer.zones import Zone, ZoneError, ZoneTree

__all__ = ["MAX_BYTES", "MAX_ROWS", "ImportReport", "ImportRow", "import_csv", "parse_csv"]

MAX_BYTES = 32 * 1024 * 1024
MAX_ROWS = 250_000
MAX_ERRORS = 1000
HEADERS = {
    "code": {"code", "mã", "ma", "ma_dv", "mã đơn vị"},
    "name": {"name", "tên", "ten", "tên đơn vị"},
    "parent": {"parent", "parent_code", "mã cha", "ma_cha", "cha"},
    "level": {"level", "cấp", "cap"},
}


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int
    code: str
    name: str
    parent: str | None
    level: str | None


@dataclass(frozen=True, slots=True)
class ImportReport:
    rows: int
    created: int
    updated: int
    unchanged: int
    sha256: str


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.total = 0
        self.out_of_scope = 0

    def add(self, line: int, message: str, *, scope: bool = False) -> None:
        self.total += 1
        self.out_of_scope += scope
        if len(self.items) < MAX_ERRORS:
            self.items.append({"line": line, "message": message})

    def raise_if_any(self, what: str) -> None:
        """Raise :class:`InvalidError` listing the problems, or :class:`ForbiddenError` if any row is out of scope."""
        if not self.total:
            return
        more = f" (the first {MAX_ERRORS} are listed)" if self.total > MAX_ERRORS else ""
        errors = sorted(self.items, key=lambda e: e["line"])
        if self.out_of_scope:
            raise ForbiddenError(f"{self.out_of_scope} row(s) lie outside your scope{more}; nothing was imported",
                                 extra={"errors": errors})
        raise InvalidError(f"{what}: {self.total} problem(s){more}; nothing was imported", errors=errors)


def _decode(data: bytes, errors: _Errors) -> str:
    if len(data) > MAX_BYTES:
        raise InvalidError(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.add(number, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                               "save the file as UTF-8")
    errors.raise_if_any("the file is not UTF-8")
    raise AssertionError("unreachable")  # pragma: no cover


def _header(cells: list[str]) -> dict[str, int] | None:
    names = [unicodedata.normalize("NFC", c).strip().lower() for c in cells]
    columns = {}
    for field, aliases in HEADERS.items():
        for i, name in enumerate(names):
            if name in aliases:
                columns[field] = i
    return columns if {"code", "name"} <= set(columns) else None


def parse_csv(data: bytes) -> list[ImportRow]:
    """Rows of a zone CSV, each checked alone (codes, names, columns); raises :class:`InvalidError` listing them all."""
    rows, errors, _ = _parse(data)
    errors.raise_if_any("the CSV file has errors")
    return rows


def _parse(data: bytes) -> tuple[list[ImportRow], _Errors, set[str]]:
    """Good rows, the errors of bad ones, and the codes named on bad rows (not to be reported twice)."""
    errors = _Errors()
    text = _decode(data, errors)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[ImportRow] = []
    bad_codes: set[str] = set()
    columns: dict[str, int] | None = None
    first_line, seen = 1, 0
    try:
        for cells in reader:
            line, first_line = first_line, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            seen += 1
            if seen == 1 and (columns := _header(cells)) is not None:
                continue
            if len(rows) >= MAX_ROWS:
                errors.add(line, f"more than {MAX_ROWS} rows")
                break
            row = _row(line, cells, columns, errors)
            if row is not None:
                rows.append(row)
            elif cells and cells[0].strip() and (at := columns["code"] if columns else 0) < len(cells):
                bad_codes.add(cells[at].strip())
    except csv.Error as exc:
        errors.add(first_line, f"malformed CSV: {exc}")
    if not rows and not errors.total:
        errors.add(1, "no zones in the file")
    return rows, errors, bad_codes


def _row(line: int, cells: list[str], columns: dict[str, int] | None, errors: _Errors) -> ImportRow | None:
    if columns is None:
        if not 3 <= len(cells) <= 4:
            errors.add(line, f"expected 3 or 4 columns (code, name, parent[, level]), found {len(cells)}")
            return None
        columns = {"code": 0, "name": 1, "parent": 2, "level": 3}

    def cell(field: str) -> str:
        i = columns.get(field)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    ok = True
    code, name, parent, level = cell("code"), cell("name"), cell("parent") or None, cell("level") or None
    checks: list[Callable[[], object]] = [lambda: check_code(code), lambda: check_name(name),
                                          lambda: check_level(level)]
    if parent is not None:
        checks.append(lambda: check_code(parent, "parent code"))
    for check in checks:
        try:
            check()
        except InvalidError as exc:
            errors.add(line, exc.detail)
            ok = False
    if not ok:
        return None
    return ImportRow(line, code, check_name(name), parent, check_level(level))


def _order(rows: list[ImportRow], parents: dict[str, str | None], within: str | None, errors: _Errors,
           bad_codes: set[str]) -> list[ImportRow]:
    """Check the tree the rows make with the zones already stored; return the rows parents first."""
    by_code: dict[str, ImportRow] = {}
    for row in rows:
        if row.code in by_code:
            errors.add(row.line, f"zone {row.code!r} is already defined on line {by_code[row.code].line}")
        else:
            by_code[row.code] = row
    final = dict(parents)
    final.update({code: None for code in bad_codes if code not in final})  # reported already: no cascade
    final.update({code: row.parent for code, row in by_code.items()})
    depth: dict[str, int] = {}

    def depth_of(code: str) -> int:
        """Depth (1 for a root), -1 for a broken chain (unknown parent or cycle)."""
        chain: list[str] = []
        current = code
        while current not in depth:
            if current in chain or len(chain) > MAX_DEPTH + len(final):
                for c in chain:
                    depth[c] = -1
                return -1
            chain.append(current)
            parent = final.get(current)
            if parent is None:
                depth[current] = 1 if current in final else -1
                break
            if parent not in final:
                depth[current] = -1
                break
            current = parent
        for c in reversed(chain):
            if c not in depth:
                parent = final[c]
                assert parent is not None
                depth[c] = -1 if depth[parent] < 0 else depth[parent] + 1
        return depth[code]

    for code, row in by_code.items():
        d = depth_of(code)
        if d < 0:
            if row.parent is not None and row.parent not in final:
                errors.add(row.line, f"zone {code!r} names an unknown parent {row.parent!r}")
            else:
                errors.add(row.line, f"zone {code!r} is part of a cycle of parents")
        elif d > MAX_DEPTH:
            errors.add(row.line, f"zone {code!r} would be {d} levels deep; at most {MAX_DEPTH} "
                                 "(a device's zone path holds at most 8 zones)")
        elif within is not None and code != within:
            path: list[str] = []
            step: str | None = code
            while step is not None:
                path.append(step)
                step = final[step]
            if within not in path:
                errors.add(row.line, f"zone {code!r} would lie outside your scope ({within})", scope=True)
    for code in final:
        if code not in by_code and depth_of(code) > MAX_DEPTH:
            mover = code
            while mover not in by_code:
                parent = final[mover]
                assert parent is not None
                mover = parent
            errors.add(by_code[mover].line, f"moving zone {mover!r} would put {code!r} more than "
                                            f"{MAX_DEPTH} levels deep")
    errors.raise_if_any("the zones do not form a valid tree")
    try:  # the streamer's own tree check, as a second opinion on the result
        ZoneTree(Zone(code, code, parent) for code, parent in final.items())
    except ZoneError as exc:
        raise InvalidError(f"the zones do not form a valid tree: {exc}") from None
    return sorted(by_code.values(), key=lambda r: (depth[r.code], r.line))


def import_csv(tx: Tx, actor: Actor, data: bytes, *, within: str | None = None) -> ImportReport:
    """Validate and apply a zone CSV in ``tx``; ``within`` restricts every row to that zone's subtree."""
    rows, errors, bad_codes = _parse(data)
    stored = {r.code: r for r in tx.conn.execute(select(zones.c.code, zones.c.name, zones.c.parent, zones.c.level))}
    parents = {code: r.parent for code, r in stored.items()}
    if within is not None:
        current = stored[within]
        for row in rows:
            if row.code == within and (row.name, row.parent, row.level or current.level) != tuple(current[1:]):
                errors.add(row.line, f"zone {row.code!r} is your scope zone: only a user above it may change it",
                           scope=True)
    ordered = _order(rows, parents, within, errors, bad_codes)
    existing = {code: (r.name, r.parent, r.level) for code, r in stored.items()}
    ordered = [replace(r, level=stored[r.code].level) if r.level is None and r.code in stored else r
               for r in ordered]
    records = [ZoneRecord(r.code, r.name, r.parent, r.level, tx.now) for r in ordered]
    created, updated, unchanged = apply_rows(tx, records, existing)
    digest = hashlib.sha256(data).hexdigest()
    audit.record(tx, actor=actor.name, source=actor.source, action="zone.import", target=within or "",
                 details={"rows": len(rows), "created": created, "updated": updated, "unchanged": unchanged,
                          "sha256": digest})
    return ImportReport(len(rows), created, updated, unchanged, digest)
