"""`loa streamer --config site.toml`: run the streamer service of a site until Ctrl-C or SIGTERM.

The site file (TOML) is described in :mod:`loa.streamer.config`; ``streamer/example-site.toml`` is a complete
example. On first start the server key file is created (mode 0600) and the server's public key printed: devices
are provisioned with it. ``--udp`` overrides the listening address, ``--backend`` the event loop (trio, or
asyncio, which uses uvloop when installed), ``--no-zeroconf`` turns off the DNS-SD advertisement.

Every problem a user can fix (a bad site file, a key file that cannot be read, an address in use) is reported
as one line and exit code 1; never a traceback.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import anyio
import click

from loa.streamer.config import SiteConfigError, load_site, parse_hostport

__all__ = ["streamer"]


def _backend_options(backend: str) -> dict[str, Any]:
    if backend == "asyncio" and importlib.util.find_spec("uvloop") is not None:
        return {"use_uvloop": True}
    return {}


@click.command("streamer")
@click.option("--config", "config_path", required=True, metavar="SITE.toml", help="The site file.")
@click.option("--udp", metavar="HOST:PORT", help="Listen here instead of [server] udp.")
@click.option("--backend", type=click.Choice(["trio", "asyncio"]), help="Event loop (default: [server] backend, "
              "else trio).")
@click.option("--no-zeroconf", is_flag=True, help="Do not advertise the server by DNS-SD (_loa._udp).")
def streamer(*, config_path: str, udp: str | None, backend: str | None, no_zeroconf: bool) -> None:
    """Run the streamer of a site: device sessions, live broadcasts, alerts and stored programmes."""
    from loa.streamer.site import SiteError, run_site

    try:
        config = load_site(config_path)
        address = None if udp is None else parse_hostport(udp, default_port=4433, listen=True)
    except (SiteConfigError, ValueError) as exc:
        raise click.ClickException(str(exc) if isinstance(exc, SiteConfigError) else f"--udp: {exc}") from None
    chosen = backend or config.server.backend or "trio"

    def log(line: str) -> None:
        click.echo(f"loa streamer: {line}", err=True)

    async def main() -> None:
        await run_site(config, udp=address, zeroconf=False if no_zeroconf else None, log=log)

    log(f"site {config_path} on {chosen}{' (uvloop)' if _backend_options(chosen) else ''}")
    try:
        anyio.run(main, backend=chosen, backend_options=_backend_options(chosen))
    except SiteError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        log("interrupted")
    log("stopped")
