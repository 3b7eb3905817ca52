"""The output helpers of `loa admin` without a server: one row stays one line, API times shown in local time,
problem documents turned into one error line (plus one indented line per bad CSV line or conflict), and pages
followed until the limit."""

from __future__ import annotations

from typing import Any

import click
import httpx2
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from loa.control_plane.admin_client import Api, ApiError, cell, fields, local, present, stacked, tsv


def test_times_are_shown_in_local_time() -> None:
    assert local("2030-03-01T01:00:00Z") == "2030-03-01T08:00:00+07:00"
    assert local("2030-03-01T01:00:00+00:00", "UTC") == "2030-03-01T01:00:00+00:00"
    assert local(None) == local("") == "-"
    assert local("not a time") == "not a time"


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.text(),
                 st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)))
def test_a_cell_is_one_line_without_tabs(value: Any) -> None:
    """Free text (titles, details, telemetry) never breaks a row. (Lists are joined as they are: they hold codes
    and ids.)"""
    shown = cell(value)
    assert "\n" not in shown
    assert "\r" not in shown
    assert "\t" not in shown


def test_cells_rows_and_fields() -> None:
    assert [cell(None), cell(True), cell(False), cell([]), cell(["a", 2])] == ["-", "yes", "no", "-", "a,2"]
    assert cell("Loa\nchợ") == "Loa chợ"
    assert tsv(1, "a", None) == "1\ta\tNone"
    assert fields({"id": 3, "at": "2030-03-01T01:00:00Z", "zones": ["48", "490"]}, times=("at",)).splitlines() == [
        "id\t3", "at\t2030-03-01T08:00:00+07:00", "zones\t48,490"]
    assert present(a=1, b=None, c=False) == {"a": 1, "c": False}


class Replies:
    """An HTTP client that answers from a list (what ``Api`` is given by ``loa admin`` in its tests)."""

    def __init__(self, *responses: httpx2.Response) -> None:
        self.responses = list(responses)
        self.requests: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        self.requests.append((method, path, kwargs))
        return self.responses.pop(0)


def test_a_problem_document_is_one_line_plus_its_details() -> None:
    problem = {"status": 422, "title": "Unprocessable", "detail": "2 bad lines",
               "errors": [{"line": 3, "message": "no parent"}, {"loc": ["body", "zone"], "msg": "missing"}],
               "conflicts": [{"entry": 7, "title": "Bản tin", "count": 2, "zones": [["490", "20194"]],
                              "occurrences": [{"start": "2030-03-02T23:00:00Z"}]}]}
    api = Api(Replies(httpx2.Response(422, json=problem)), "loa_token")
    with pytest.raises(ApiError) as raised:
        api.call("POST", "/api/v1/zones/import")
    assert raised.value.message.splitlines() == [
        "422 Unprocessable: 2 bad lines", "  3: no parent", "  body.zone: missing",
        "  conflict\t7\tBản tin\t2 collisions\t2030-03-03T06:00:00+07:00\t490/20194"]
    assert raised.value.body == problem
    with pytest.raises(ApiError, match=r"^HTTP 502: Bad Gateway$"):
        Api(Replies(httpx2.Response(502, text="Bad Gateway")), None).call("GET", "/")


def test_the_token_is_sent_and_an_empty_answer_is_none() -> None:
    replies = Replies(httpx2.Response(204))
    assert Api(replies, "loa_x").call("DELETE", "/api/v1/library/1") is None
    assert replies.requests[0][2]["headers"] == {"Authorization": "Bearer loa_x"}


def test_pages_follow_the_cursor_until_the_limit() -> None:
    replies = Replies(httpx2.Response(200, json={"items": [{"id": 1}, {"id": 2}], "next_cursor": "c2"}),
                      httpx2.Response(200, json={"items": [{"id": 3}], "next_cursor": "c3"}))
    assert [i["id"] for i in Api(replies, None).pages("/api/v1/zones", {"q": "x"}, 3)] == [1, 2, 3]
    assert [r[2]["params"] for r in replies.requests] == [{"q": "x", "limit": 3},
                                                          {"q": "x", "limit": 1, "cursor": "c2"}]


def test_stacked_options_read_as_written() -> None:
    both = stacked([click.option("--a", default="1"), click.option("--b", default="2")])

    @click.command()
    @both
    def command(a: str, b: str) -> None:
        click.echo(f"{a}{b}")

    result = CliRunner().invoke(command, ["--b", "9", "--help"])
    assert result.output.index("--a") < result.output.index("--b")
    assert CliRunner().invoke(command, ["--b", "9"]).output == "19\n"
