"""Reports of a conformance run: ``index.json``, ``index.html`` (agents x cases) and one JSON and HTML file per
case and agent, with the description, the expectation, each check (expected vs observed), the verdict and the
full datagram log. Plain HTML and inline CSS: no scripts, nothing fetched.

``index.json`` is ``{agent: {case_id: {verdict, duration_ms, report}}}``, ``report`` being the path of the case's
JSON file relative to the output folder. Writing merges with an ``index.json`` already in the folder, so runs of
several agents into one folder build one matrix.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loa.devices.conformance.registry import Verdict, all_cases
from loa.devices.conformance.runner import CaseResult

__all__ = ["write_reports"]

COLOURS = {
    Verdict.OK: "#8fd18f",
    Verdict.NON_STRICT: "#f2d16b",
    Verdict.INFORMATIONAL: "#9cc3e6",
    Verdict.UNIMPLEMENTED: "#cccccc",
    Verdict.FAILED: "#f08a8a",
}
STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "td,th{border:1px solid #999;padding:2px 6px;font-size:13px;vertical-align:top}"
    "td.hex{font-family:monospace;word-break:break-all;max-width:60em}pre{white-space:pre-wrap}"
)


def _file_name(agent: str, case_id: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in agent)
    return f"{safe}_{case_id}"


def case_json(result: CaseResult) -> dict[str, Any]:
    c = result.case
    return {
        "agent": result.agent, "id": c.id, "section": c.section, "title": c.title, "description": c.description,
        "expectation": c.expectation, "quote": c.quote, "level": c.level, "verdict": str(result.verdict),
        "reason": result.reason, "duration_ms": result.duration_ms,
        "checks": [ch.as_json() for ch in result.checks], "notes": result.notes,
        "log": [e.as_json() for e in result.log.entries], "log_omitted": result.log.omitted,
    }


def _cell(verdict: str, link: str | None = None, text: str | None = None) -> str:
    colour = COLOURS.get(Verdict(verdict), "#fff")
    label = html.escape(text or verdict)
    inner = f'<a href="{html.escape(link)}">{label}</a>' if link else label
    return f'<td style="background:{colour}">{inner}</td>'


def case_html(data: dict[str, Any]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr>{_cell('OK' if ch['ok'] else ('FAILED' if ch['level'] == 'MUST' else 'NON-STRICT'), text=ch['level'])}"
        f"<td>{e(ch['what'])}</td><td>{e(ch['expected'])}</td><td><pre>{e(ch['observed'])}</pre></td></tr>"
        for ch in data["checks"]
    )
    log = "".join(
        f"<tr><td>{entry['t']:.6f}</td><td>{e(entry['dir'])}</td><td>{entry['len']}</td><td>{e(entry['note'])}</td>"
        f"<td class=hex>{entry['hex']}</td></tr>"
        for entry in data["log"]
    )
    omitted = f"<p>{data['log_omitted']} later datagrams not logged.</p>" if data["log_omitted"] else ""
    notes = "".join(f"<li>{e(n)}</li>" for n in data["notes"])
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{e(data['id'])} {e(data['agent'])}</title>"
        f"<style>{STYLE}</style></head><body><p><a href=index.html>index</a></p>"
        f"<h1>Case {e(data['id'])}: {e(data['title'])}</h1>"
        f"<table><tr><th>Agent</th><td>{e(data['agent'])}</td></tr>"
        f"<tr><th>Verdict</th>{_cell(data['verdict'])}</tr><tr><th>Reason</th><td>{e(data['reason'])}</td></tr>"
        f"<tr><th>Duration</th><td>{data['duration_ms']} ms</td></tr>"
        f"<tr><th>Section</th><td>PROTOCOL.md {e(data['section'])}</td></tr>"
        f"<tr><th>Description</th><td>{e(data['description'])}</td></tr>"
        f"<tr><th>Expectation</th><td>{e(data['expectation'])}</td></tr>"
        f"<tr><th>Spec ({e(data['level'])})</th><td><q>{e(data['quote'])}</q></td></tr></table>"
        f"<h2>Checks</h2><table><tr><th>Level</th><th>Check</th><th>Expected</th><th>Observed</th></tr>{rows}</table>"
        f"{'<h2>Notes</h2><ul>' + notes + '</ul>' if notes else ''}"
        f"<h2>Datagram log</h2><p>t: seconds since the case started; kit: the kit's server socket, alt: its second "
        f"socket (a stranger's address), dev: the device.</p>{omitted}"
        f"<table><tr><th>t</th><th>dir</th><th>bytes</th><th>reading</th><th>hex</th></tr>{log}</table>"
        f"</body></html>"
    )


def index_html(index: dict[str, dict[str, dict[str, Any]]]) -> str:
    e = html.escape
    titles = {c.id: c.title for c in all_cases()}
    ids = sorted({cid for cases in index.values() for cid in cases}, key=lambda s: tuple(int(p) for p in s.split(".")))
    agents = sorted(index)
    head = "".join(f"<th>{e(a)}</th>" for a in agents)
    rows = []
    for cid in ids:
        cells = "".join(
            _cell(index[a][cid]["verdict"], index[a][cid]["report"].replace(".json", ".html")) if cid in index[a]
            else "<td></td>"
            for a in agents
        )
        rows.append(f"<tr><td>{e(cid)}</td><td>{e(titles.get(cid, ''))}</td>{cells}</tr>")
    totals = []
    for a in agents:
        counts: dict[str, int] = {}
        for entry in index[a].values():
            counts[entry["verdict"]] = counts.get(entry["verdict"], 0) + 1
        totals.append(f"<li>{e(a)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "</li>")
    legend = "".join(_cell(str(v)) for v in Verdict)
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>loa conformance</title><style>{STYLE}</style></head>"
        f"<body><h1>loa conformance: agents x cases</h1><ul>{''.join(totals)}</ul>"
        f"<table><tr>{legend}</tr></table><p></p>"
        f"<table><tr><th>Case</th><th>Title</th>{head}</tr>{''.join(rows)}</table></body></html>"
    )


def write_reports(results: Iterable[CaseResult], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write every report into ``out`` (created if needed) and return the merged index."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / "index.json"
    index: dict[str, dict[str, dict[str, Any]]] = {}
    if index_path.exists():
        try:
            loaded = json.loads(index_path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                index = loaded
        except (OSError, ValueError):
            index = {}
    for result in results:
        data = case_json(result)
        name = _file_name(result.agent, result.case.id)
        (folder / f"{name}.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
        (folder / f"{name}.html").write_text(case_html(data), encoding="utf-8")
        index.setdefault(result.agent, {})[result.case.id] = {
            "verdict": str(result.verdict), "duration_ms": result.duration_ms, "report": f"{name}.json",
        }
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
    (folder / "index.html").write_text(index_html(index), encoding="utf-8")
    return index
