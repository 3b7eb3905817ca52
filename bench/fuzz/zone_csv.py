"""Fuzz target ``zone_csv``: the zone CSV importer's checks (:mod:`loa.control_plane.zone_import`).

The first byte picks the importer's scope (none, the province, a district, a commune of the sample province
of :mod:`loa.control_plane.testing`, which stands for the zones already stored); the rest is the uploaded file.
It runs everything :func:`~loa.control_plane.zone_import.import_csv` does before writing: decoding, CSV
parsing, every row's checks, duplicates, unknown parents, cycles, depth and scope. The database write that
follows is not fuzzed (it takes rows these checks passed).

Accepted errors: :class:`~loa.control_plane.errors.InvalidError` and
:class:`~loa.control_plane.errors.ForbiddenError`. Oracle: the rows come back parents first, each row within
the scope.
"""

from __future__ import annotations

from loa.control_plane.errors import ForbiddenError, InvalidError
from loa.control_plane.testing import PROVINCE_CSV
from loa.control_plane.zone_import import _order, _parse, parse_csv

MAX_LEN = 8192
STORED = {row.code: row.parent for row in parse_csv(PROVINCE_CSV.encode())}
SCOPES = (None, "48", "490", "20194")


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    if not data:
        return
    within = SCOPES[data[0] % len(SCOPES)]
    try:
        rows, errors, bad_codes = _parse(data[1:])
        ordered = _order(rows, STORED, within, errors, bad_codes)
    except (InvalidError, ForbiddenError):
        return
    parents = dict(STORED)
    placed: set[str] = set(STORED)
    for row in ordered:
        if row.parent is not None and row.parent not in placed and row.parent not in parents:
            raise AssertionError(f"zone {row.code!r} comes before its parent {row.parent!r}")
        placed.add(row.code)
        parents[row.code] = row.parent
    if within is not None:
        for row in ordered:
            step: str | None = row.code
            path: list[str] = []
            while step is not None and len(path) < 64:
                path.append(step)
                step = parents.get(step)
            if within not in path:
                raise AssertionError(f"zone {row.code!r} was accepted outside the scope {within!r}")


def seeds() -> dict[str, bytes]:
    province = PROVINCE_CSV.encode()
    return {
        "province": b"\0" + province,
        "province.within": b"\1" + province,
        "vietnamese.header": "\0mã,tên,mã cha,cấp\n99,Tỉnh mới,,province\n991,Huyện,99,district\n".encode(),
        "positional": b"\2" + b"492,Q,490\n20300,P,492,commune\n",
        "bom.crlf": b"\3\xef\xbb\xbfcode,name,parent\r\n20194-09,T\xe1\xbb\x95 9,20194\r\n",
        "cycle": b"\0a1,A,b1\nb1,B,a1\n",
        "quoted": b'\0"code","name","parent","level"\n"77","Quoted, name",,province\n',
    }
