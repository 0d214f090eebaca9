"""hub: a tracker and a keyword index, run until interrupted."""

from __future__ import annotations

from pathlib import Path

import click

from ..storage.resume import state_dir
from .common import (
    HUB_PORT,
    main,
    run,
    until_signal,
)


@main.command()
@click.option("--host", default="::", help="Address to listen on (default: all, IPv4 and IPv6).")
@click.option("--port", type=click.IntRange(1, 65535), default=HUB_PORT, help="TCP and UDP port.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Index database.")
@click.option(
    "--allow",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Only track the info-hashes listed in this file (40 hex digits a line).",
)
def hub(host: str, port: int, db: Path | None, allow: Path | None) -> None:
    """Run a hub: a BitTorrent tracker and a keyword index, until interrupted."""
    from ..hub.server import Hub, run_hub

    db_path = db or state_dir() / "hub.db"

    def ready(hub: Hub) -> None:
        # What to paste into another command: a wildcard address is reached on loopback.
        shown = hub.url.replace("[::]", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
        click.echo(
            f"hub at {shown} (tracker {shown}/announce and"
            f" {shown.replace('http', 'udp', 1)}/announce; index in {db_path})",
            err=True,
        )

    async def serve_hub() -> None:
        await run_hub(host, port, db_path, allow=allow, stop=until_signal(), ready=ready)

    run(serve_hub)
