"""The conformance kit (``loa conformance``): vendors test their devices against spec/PROTOCOL.md.

The kit plays the server's part itself, built from ``loa.protocol`` on real UDP sockets, so that it can
misbehave on purpose; each case (``registry``) starts a fresh device session, checks what comes over the wire,
and gets a verdict; ``report`` writes the agents x cases matrix and a per-case report with the full datagram
log. ``mutants`` holds broken variants of the reference device that prove the kit detects what it claims.
"""

from loa.devices.conformance.agents import Agent, ExternalAgent, ReferenceAgent
from loa.devices.conformance.kit import KitServer, KitState
from loa.devices.conformance.registry import Case, Verdict, all_cases, select
from loa.devices.conformance.report import write_reports
from loa.devices.conformance.runner import CaseResult, run_cases

__all__ = [
    "Agent",
    "Case",
    "CaseResult",
    "ExternalAgent",
    "KitServer",
    "KitState",
    "ReferenceAgent",
    "Verdict",
    "all_cases",
    "run_cases",
    "select",
    "write_reports",
]
