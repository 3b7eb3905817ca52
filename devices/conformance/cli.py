"""`loa conformance`: run the conformance kit against the reference device, a mutant, or a vendor's device.

``run --device reference|mutant:NAME|external --out DIR`` runs the cases and writes the reports;
``list`` prints the case ids and titles; ``mutants`` the mutants and their defects. Every user mistake (an
unknown device kind or mutant, a pattern that matches no case, a bad key or address) is one clear line.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

import click

__all__ = ["conformance"]

DEFAULT_LISTEN = "127.0.0.1:4433"


@click.group("conformance")
def conformance() -> None:
    """Test a device against spec/PROTOCOL.md (cases by section, verdicts, per-case wire logs)."""


@conformance.command("list")
def list_cases() -> None:
    """Print every case: id and title."""
    from loa.devices.conformance.registry import all_cases

    for c in all_cases():
        click.echo(f"{c.id:8} {c.title}")


@conformance.command("mutants")
def list_mutants() -> None:
    """Print the mutants of the reference device, each with its one defect and the cases it must fail."""
    from loa.devices.conformance.mutants import MUTANTS

    for mutant in MUTANTS.values():
        click.echo(f"{mutant.name:22} {mutant.defect}  (fails {', '.join(sorted(mutant.fails)) or 'nothing'})")


def _kit_keys(path: str | None) -> tuple[bytes, object]:
    """The kit's X25519 private key (from ``path``, created there if missing, or random) and its authority key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from loa.devices.identity import IdentityError, load_or_create_key

    if path is None:
        private = os.urandom(32)
    else:
        try:
            private, _ = load_or_create_key(path)
        except IdentityError as exc:
            raise click.ClickException(str(exc)) from None
    seed = hashlib.blake2s(b"loa conformance authority\x00" + private).digest()
    return private, Ed25519PrivateKey.from_private_bytes(seed)


def _listen(text: str) -> tuple[str, int]:
    from loa.devices.cli import parse_server

    host, port = parse_server(text, any_port=True)
    return host, port


@conformance.command("run")
@click.option("--device", "device", required=True, metavar="reference|mutant:NAME|external",
              help="What to test: the reference device, one of its mutants, or a device on the network.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for index.json/html and reports.")
@click.option("--cases", "include", multiple=True, metavar="PATTERN",
              help="Run only these cases: an id (3.4.1), a section (3.4) or a glob (5.*); repeatable.")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave these cases out; repeatable.")
@click.option("--listen", default=None, metavar="HOST:PORT",
              help=f"The kit's server address (external: default {DEFAULT_LISTEN}, port 0 for any free port, the "
                   "one bound being printed; in-process: 127.0.0.1, any port).")
@click.option("--kit-key", type=click.Path(dir_okay=False),
              help="The kit's private key file (created on first use); its public keys are printed.")
@click.option("--device-key", metavar="KEY", help="External: the device's public key (base64 or hex) to enrol.")
@click.option("--token", help="External: a one-time enrolment token the device presents in hello instead.")
@click.option("--restart-cmd", metavar="COMMAND",
              help="External: a shell command run before each case to restart the device (else the kit sends it "
                   "reboot after each case).")
@click.option("--wait", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="External: seconds to wait for the device's handshake in each case.")
@click.option("--jobs", type=click.IntRange(1, 32), default=8, show_default=True,
              help="In-process devices: cases run at once (an external device runs one at a time).")
def run(*, device: str, out: str, include: tuple[str, ...], exclude: tuple[str, ...], listen: str | None,
        kit_key: str | None, device_key: str | None, token: str | None, restart_cmd: str | None, wait: float,
        jobs: int) -> None:
    """Run the cases against DEVICE and write the reports into OUT."""
    from loa.devices.conformance.agents import Agent, ExternalAgent, ReferenceAgent
    from loa.devices.conformance.kit import KitState, open_kit_socket
    from loa.devices.conformance.mutants import MUTANTS
    from loa.devices.conformance.registry import SelectionError, Verdict, select
    from loa.devices.conformance.report import write_reports
    from loa.devices.conformance.runner import CaseResult, run_cases
    from loa.devices.identity import IdentityError, encode_key, parse_key
    from loa.devices.runner import run as run_loop
    from loa.protocol.noise import x25519_public

    try:
        cases = select(include, exclude)
    except SelectionError as exc:
        raise click.ClickException(str(exc)) from None
    if not cases:
        raise click.ClickException("the --cases and --exclude patterns leave no case to run")
    agent: Agent
    if device == "reference":
        agent = ReferenceAgent()
    elif device.startswith("mutant:"):
        name = device.removeprefix("mutant:")
        if name not in MUTANTS:
            raise click.ClickException(f"unknown mutant {name!r}; `loa conformance mutants` lists them")
        agent = MUTANTS[name].agent()
    elif device == "external":
        key = None
        if device_key is not None:
            try:
                key = parse_key(device_key, "--device-key")
            except IdentityError as exc:
                raise click.ClickException(str(exc)) from None
        if key is None and token is None:
            raise click.ClickException("external: give --device-key KEY, or --token TOKEN for enrolment by token")
        agent = ExternalAgent(device_key=key, restart_cmd=restart_cmd, wait=wait)
    else:
        raise click.ClickException(f"bad --device {device!r}: expected reference, mutant:NAME or external")
    external = device == "external"
    host, port = _listen(listen or DEFAULT_LISTEN) if (external or listen) else ("127.0.0.1", 0)
    if not external:
        port = 0
    private, authority = _kit_keys(kit_key)
    state = KitState(static_private=private, authority=authority, token=token)  # type: ignore[arg-type]
    sock: socket.socket | None = None
    if external:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        try:  # bound before the address is printed: the device is told the address that is really listening
            sock = open_kit_socket(host, port)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        port = int(sock.getsockname()[1])

        auth_pub = authority.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)  # type: ignore[attr-defined]
        click.echo(f"kit server address: {host}:{port}")
        click.echo(f"kit server public key: {encode_key(x25519_public(private))}")
        click.echo(f"kit authority public key (alerts): {encode_key(auth_pub)}")
        click.echo(f"kit zones (config): 79 760 26734 26734-03; enrolment token: {token or '(none)'}")
        click.echo(f"waiting for the device ({len(cases)} cases; up to {wait:g} s for each handshake)...")
    begin = time.monotonic()

    def progress(result: CaseResult) -> None:
        suffix = f": {result.reason}" if result.reason else ""
        click.echo(f"{result.case.id:8} {result.verdict:14} {result.duration_ms:6d} ms  {result.case.title}{suffix}",
                   err=True)

    results: list[CaseResult] = []

    async def main() -> None:
        results.extend(await run_cases(cases, agent, state, jobs=jobs, host=host, sock=sock, on_result=progress))

    try:
        run_loop(main, "trio")
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}: {exc.strerror or exc}") from None
    finally:
        if sock is not None:
            sock.close()
    write_reports(results, out)
    counts = {str(v): sum(1 for r in results if r.verdict is v) for v in Verdict}
    summary = ", ".join(f"{k} {n}" for k, n in counts.items() if n)
    click.echo(f"loa conformance: {agent.name}: {summary} in {time.monotonic() - begin:.1f} s; reports in {out}")
    if counts[str(Verdict.FAILED)]:
        raise SystemExit(1)
