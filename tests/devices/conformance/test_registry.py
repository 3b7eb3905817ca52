"""The case registry: unique ids by spec section, a description and an expectation on each, quotes from the spec."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import loa
from loa.devices.conformance.registry import Case, SelectionError, all_cases, select

SPEC = (Path(loa.__file__).resolve().parent / "spec" / "PROTOCOL.md").read_text(encoding="utf-8")
FLAT = " ".join(SPEC.split())
SECTIONS = set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", SPEC, flags=re.MULTILINE))
CASES = all_cases()


def test_at_least_sixty_cases_with_unique_ids() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 60
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_case_is_documented_against_the_spec(c: Case) -> None:
    assert c.section in SECTIONS, f"{c.id}: section {c.section} is not a heading of PROTOCOL.md"
    assert c.title
    assert c.description
    assert c.expectation
    assert re.search(r"\b(MUST|SHOULD)\b", c.expectation), f"{c.id}: the expectation states no MUST or SHOULD"
    assert c.quote in FLAT, f"{c.id}: the quoted sentence is not in PROTOCOL.md word for word"


def test_selection_by_id_section_and_glob() -> None:
    assert [c.id for c in select(["3.3.1"])] == ["3.3.1"]
    assert {c.id for c in select(["6.2"])} == {c.id for c in CASES if c.id.startswith("6.2.")}
    assert all(c.id.startswith("5.") for c in select(["5.*"]))
    assert "3.3.1" not in {c.id for c in select([], ["3.3"])}


def test_a_pattern_matching_nothing_is_an_error() -> None:
    with pytest.raises(SelectionError, match="matches no case"):
        select(["42.1"])


def test_conformance_doc_lists_exactly_the_registry() -> None:
    from loa.devices.conformance.registry import case_table

    doc = (Path(loa.__file__).resolve().parent / "spec" / "CONFORMANCE.md").read_text(encoding="utf-8")
    table = doc.split("<!-- cases: generated from the registry -->\n")[1].split("\n<!-- /cases -->")[0]
    assert table == case_table(), "regenerate it from loa.devices.conformance.registry.case_table()"
