"""Administrative levels: the issuing levels of PROTOCOL.md section 6.1 and which zones are communes.

Zone levels are free text (a CSV import writes what the province's list says), so they are matched by name, in
English or Vietnamese, case-insensitively and in Unicode NFC. A zone whose level is none of these names has no
known level. The issuing level of a user is that of the nearest zone at or above their scope whose level is
known (a hamlet user issues as their commune), national for national scope, and commune, the lowest, when no
zone on the path says: an unlabelled tree never lets anyone outrank a real province.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

__all__ = ["COMMUNE", "DISTRICT", "LEVEL_NAMES", "NATIONAL", "PROVINCE", "commune_of", "issuing_level",
           "level_of"]

COMMUNE, DISTRICT, PROVINCE, NATIONAL = 0, 1, 2, 3
LEVEL_NAMES = ("commune", "district", "province", "national")  # by wire value

_NAMES: Mapping[str, int] = {
    **dict.fromkeys(("commune", "ward", "township", "xã", "phường", "thị trấn", "cấp xã"), COMMUNE),
    **dict.fromkeys(("district", "huyện", "quận", "thị xã", "cấp huyện"), DISTRICT),
    **dict.fromkeys(("province", "tỉnh", "thành phố trực thuộc trung ương", "cấp tỉnh"), PROVINCE),
    **dict.fromkeys(("national", "nation", "country", "quốc gia", "trung ương"), NATIONAL),
}


def level_of(name: str | None) -> int | None:
    """The issuing level a zone level name stands for, or None if it is not one of them (a hamlet, say)."""
    if not name:
        return None
    return _NAMES.get(unicodedata.normalize("NFC", name).strip().casefold())


def issuing_level(path_levels: Sequence[str | None] | None) -> int:
    """The issuing level of a user whose scope has these zone levels, root first (None: national scope)."""
    if path_levels is None:
        return NATIONAL
    for name in reversed(path_levels):
        level = level_of(name)
        if level is not None:
            return level
    return COMMUNE


def commune_of(zone: str, parents: Mapping[str, str | None], levels: Mapping[str, str | None],
               *, limit: int = 16) -> str:
    """The commune a zone lies in: the nearest zone at or above it whose level is commune; else the zone itself
    (a device hung directly on a district still appears in reports, under its own zone)."""
    code: str | None = zone
    for _ in range(limit):
        if code is None:
            break
        if level_of(levels.get(code)) == COMMUNE:
            return code
        code = parents.get(code)
    return zone
