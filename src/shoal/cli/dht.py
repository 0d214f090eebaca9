"""dht: a DHT-only node, BEP 44 items put and got, and a node's info-hashes sampled (BEP 51)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ..errors import inert
from ..metainfo import MetainfoError
from ..metainfo.magnet import parse_peer
from ..node import Node
from ..storage.resume import state_dir

if TYPE_CHECKING:
    from ..dht.core import SamplesFound
    from ..node.dht import DhtService

from .common import (
    INFO_HASH,
    DhtChoice,
    fail,
    main,
    run,
    until_signal,
    with_dht,
)


def bootstrap_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--dht-bootstrap HOST:PORT, repeatable."""
    return click.option("--dht-bootstrap", multiple=True, metavar="HOST:PORT", help=help_text)


JOIN_HELP = "A DHT node to join through (repeatable; default: the public routers)."


@main.group(invoke_without_command=True)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="UDP port to listen on (default: 6881, or any free port if that is taken).",
)
@bootstrap_option("A DHT node to join through (repeatable; none: this node starts a network).")
@click.pass_context
def dht(ctx: click.Context, port: int | None, dht_bootstrap: tuple[str, ...]) -> None:
    """Run a DHT node and nothing else (a bootstrap node for a private network) until
    interrupted; or put or get an item in the DHT (BEP 44)."""
    if ctx.invoked_subcommand is not None:
        if port is not None or dht_bootstrap:
            raise click.UsageError(f"give the options after {ctx.invoked_subcommand!r}")
        return
    routers = DhtChoice(dht_bootstrap).routers() if dht_bootstrap else []

    async def serve_dht() -> None:
        # A table of its own: one saved by a seed or get on this port may hold public nodes.
        node = Node(port=port, dht_routers=routers, state=state_dir() / "dht-node")
        stop = until_signal(node)
        await node.start()
        try:
            assert node.dht is not None and node.dht.core is not None
            click.echo(
                f"DHT node on port {node.port} (UDP), id {node.dht.core.node_id.hex()}", err=True
            )
            await stop.wait()
        finally:
            await node.stop()

    run(serve_dht)


def joined_through(dht_bootstrap: tuple[str, ...]) -> list[tuple[str, int]]:
    """The nodes a one-shot request joins through: those given, else the public routers."""
    routers = DhtChoice(dht_bootstrap).routers()
    assert routers is not None  # None only with --no-dht, which these commands lack
    return routers


@dht.command("put")
@click.argument("text")
@click.option("--mutable", is_flag=True, help="Sign it with this node's key, as its next version.")
@click.option("--salt", default="", help="With --mutable: one of several items of the key.")
@bootstrap_option(JOIN_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def dht_put(
    text: str, mutable: bool, salt: str, dht_bootstrap: tuple[str, ...], as_json: bool
) -> None:
    """Store TEXT in the DHT (BEP 44) for two hours; prints the target to get it by."""
    from ..dht import items
    from ..identity import Identity

    if salt and not mutable:
        raise click.UsageError("--salt needs --mutable")
    value = text.encode()
    try:
        # Checked here, before joining: too long a value or salt is a plain error.
        item = items.immutable(value)
        if mutable:
            identity = Identity.load_or_create()
            items.mutable(identity, value, 0, salt.encode())
    except items.ItemError as exc:
        if exc.code == items.VALUE_TOO_BIG:
            exc = items.ItemError(f"TEXT is {len(value)} bytes; it may be {items.MAX_TEXT} at most")
        fail(str(exc))

    async def put(service: DhtService) -> tuple[items.Item, int]:
        if mutable:
            return await service.put_mutable(identity, value, salt.encode())
        return item, await service.put_item(item)

    stored, nodes = run(lambda: with_dht(joined_through(dht_bootstrap), put))
    if nodes == 0:
        fail("no DHT node took the item")
    shown: dict[str, Any] = {"target": stored.target.hex(), "nodes": nodes}
    if stored.key is not None:
        shown.update(key=stored.key.hex(), salt=salt, seq=stored.seq)
    if as_json:
        click.echo(json.dumps(shown))
        return
    click.echo(" ".join(f"{name} {value}" for name, value in shown.items() if value != ""))


@dht.command("get")
@click.argument("target", required=False)
@click.option("--key", metavar="HEX", help="The public key of a mutable item (instead of TARGET).")
@click.option("--salt", default="", help="With --key: the salt it was put with.")
@bootstrap_option(JOIN_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def dht_get(
    target: str | None, key: str | None, salt: str, dht_bootstrap: tuple[str, ...], as_json: bool
) -> None:
    """Print the item stored under TARGET (40 hex digits), or under --key and --salt."""
    from ..dht import items

    if (target is None) == (key is None):
        raise click.UsageError("give TARGET or --key, one of them")
    if salt and key is None:
        raise click.UsageError("--salt goes with --key")
    if key is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", key):
            raise click.BadParameter("a public key is 64 hex digits", param_hint="--key")
        wanted = items.mutable_target(bytes.fromhex(key), salt.encode())
    elif target is not None and INFO_HASH.fullmatch(target):
        wanted = bytes.fromhex(target)
    else:
        raise click.BadParameter("a target is 40 hex digits", param_hint="TARGET")
    item = run(
        lambda: with_dht(joined_through(dht_bootstrap), lambda s: s.get_item(wanted, salt.encode()))
    )
    if item is None:
        fail(f"nothing is stored under {wanted.hex()} in the DHT")
        return
    value = item.value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else repr(value)
    if as_json:
        click.echo(json.dumps({"target": wanted.hex(), "value": text, "seq": item.seq}))
        return
    click.echo(inert(text))


@dht.command("sample")
@click.argument("node")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def dht_sample(node: str, as_json: bool) -> None:
    """Ask the DHT node at NODE (HOST:PORT) which info-hashes it holds (BEP 51)."""
    try:
        address = parse_peer(node)
    except MetainfoError as exc:
        raise click.BadParameter(str(exc), param_hint="NODE") from None

    async def sample() -> SamplesFound:
        # Read-only and joined to nobody: one question to one node.
        asker = Node(port=0, dht_routers=[], dht_read_only=True)
        await asker.start()
        try:
            assert asker.dht is not None
            return await asker.dht.sample(address)
        finally:
            await asker.stop()

    found = run(sample)
    if not found.answered:
        fail(f"no answer from {node} to sample_infohashes")
    hashes = [info_hash.hex() for info_hash in found.samples]
    if as_json:
        click.echo(
            json.dumps({"count": found.count, "interval": found.interval, "samples": hashes})
        )
        return
    held = "1 info-hash" if found.count == 1 else f"{found.count} info-hashes"
    click.echo(f"{held} held; a sample of {len(hashes)}, drawn anew every {found.interval} s:")
    for info_hash in hashes:
        click.echo(info_hash)
