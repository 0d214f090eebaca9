"""node, wallet and chain: the long-running node (ledger, DHT and overlay on one port) and
the commands that talk to it over its RPC, as bitcoin-cli talks to bitcoind."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from ..errors import ShoalError
from ..ledger.params import CHAINS, ChainParams
from ..ledger.primitives import COIN, MAX_MONEY
from ..storage.resume import state_dir
from .common import fail, main, peer_addresses, run, until_signal

CHAIN_CHOICE = click.Choice(sorted(CHAINS))


def chain_params(name: str) -> ChainParams:
    """The parameters of the chain named by --chain."""
    return CHAINS[name]


def state_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--state DIR: the node's state folder."""
    return click.option(
        "--state",
        type=click.Path(file_okay=False, path_type=Path),
        help="The node's state folder (default: ~/.local/state/shoal).",
    )(command)


def chain_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--chain local|main."""
    return click.option(
        "--chain",
        type=CHAIN_CHOICE,
        default="local",
        show_default=True,
        help="Which chain: local (one machine's, fast blocks) or main.",
    )(command)


def client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """What every wallet and chain command takes to find its node, and --json: the command
    gets them as one `client` argument."""

    @functools.wraps(command)
    def with_client(
        chain: str, state: Path | None, rpc_port: int | None, as_json: bool, **given: Any
    ) -> Any:
        return command(client=Client(chain, state, rpc_port, as_json), **given)

    wrapped = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(
        with_client
    )
    wrapped = click.option(
        "--rpc-port",
        type=click.IntRange(1, 65535),
        help="The node's RPC port (default: the one it published in its state folder).",
    )(wrapped)
    return chain_option(state_option(wrapped))


def format_coins(units: int) -> str:
    """Base units as coins with 8 decimals."""
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), COIN)
    return f"{sign}{whole}.{fraction:08d}"


def parse_coins(text: str) -> int:
    """An amount of coins a user wrote (up to 8 decimals) in base units."""
    try:
        units = Decimal(text) * COIN
    except InvalidOperation:
        raise click.BadParameter(f"{text!r} is not an amount of coins") from None
    if units != units.to_integral_value() or not 0 < units <= MAX_MONEY:
        raise click.BadParameter("an amount is more than 0, at most 21 million, 8 decimals")
    return int(units)


def fields(result: dict[str, Any]) -> str:
    """An RPC result as lines of `key: value`."""
    return "\n".join(f"{key}: {value}" for key, value in result.items())


class Client:
    """The RPC of the node given by --chain, --state and --rpc-port."""

    def __init__(self, chain: str, state: Path | None, rpc_port: int | None, as_json: bool):
        from ..node.ledger import ledger_dir

        self.folder = ledger_dir(state or state_dir(), chain_params(chain))
        self.rpc_port = rpc_port
        self.as_json = as_json

    def call(self, method: str, **params: Any) -> Any:
        """The result of method; a one-sentence exit if the node refuses or is not there."""
        from ..node.rpc import call

        try:
            return call(self.folder, method, params, self.rpc_port)
        except ShoalError as exc:
            fail(str(exc))

    def show(self, result: Any, text: str | Callable[[], str]) -> None:
        """Print result as JSON with --json, else as text."""
        if self.as_json:
            click.echo(json.dumps(result if isinstance(result, dict) else {"result": result}))
        else:
            click.echo(text if isinstance(text, str) else text())


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="TCP and UDP port.")
@click.option("--host", default="0.0.0.0", help="Address to listen on.")
@click.option("--peer", "peers", multiple=True, metavar="HOST:PORT", help="A ledger node to dial.")
@click.option("--mine", metavar="ADDRESS", help="Mine blocks paying this address.")
@click.option(
    "--block-time",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    help="Local chain: the mean seconds a miner waits per block (its proof of work is free).",
)
@click.option(
    "--rpc-port", type=click.IntRange(0, 65535), default=0, help="RPC port (default: any free)."
)
@click.option("--dht-bootstrap", multiple=True, metavar="HOST:PORT", help="Join the DHT here.")
@click.option("--overlay-peer", multiple=True, metavar="HOST:PORT", help="Join the overlay here.")
@chain_option
@state_option
def node(
    port: int | None,
    host: str,
    peers: tuple[str, ...],
    mine: str | None,
    block_time: float,
    rpc_port: int,
    dht_bootstrap: tuple[str, ...],
    overlay_peer: tuple[str, ...],
    chain: str,
    state: Path | None,
) -> None:
    """Run a node until interrupted: the ledger, and the DHT and overlay if given."""
    from ..ledger.bech32m import lock_from_address
    from ..node import Node
    from ..node.ledger import LedgerOptions
    from ..node.ledger_rpc import LedgerMethods
    from ..node.overlay import OverlayOptions
    from ..node.rpc import RpcServer

    params = chain_params(chain)
    mine_to = None
    if mine is not None:
        try:
            mine_to = lock_from_address(mine, params)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--mine") from None
    folder = state or state_dir()
    options = LedgerOptions(params, tuple(peer_addresses(peers)), mine_to, block_time)
    overlay = OverlayOptions(tuple(peer_addresses(overlay_peer))) if overlay_peer else None
    routers = peer_addresses(dht_bootstrap) if dht_bootstrap else None

    async def serve() -> None:
        shoal_node = Node(
            port=port, host=host, dht_routers=routers, state=folder, overlay=overlay, ledger=options
        )
        stop = until_signal(shoal_node)
        await shoal_node.start()
        ledger = shoal_node.ledger
        assert ledger is not None
        methods = LedgerMethods(ledger)
        rpc = RpcServer(methods.methods(), ledger.folder, rpc_port, node_port=shoal_node.port)
        try:
            await rpc.start()
            click.echo(
                f"node on port {shoal_node.port}, chain {params.name} at height"
                f" {ledger.height()}, RPC on 127.0.0.1:{rpc.port}",
                err=True,
            )
            await stop.wait()
        finally:
            await rpc.stop()
            methods.close()
            await shoal_node.stop()

    run(serve)


@main.group()
def wallet() -> None:
    """The node's wallet: addresses, balance, payments, history."""


@wallet.command("new")
@client_options
def wallet_new(client: Client) -> None:
    """Make a new receiving address."""
    address = client.call("wallet.new")
    client.show({"address": address}, address)


@wallet.command("address")
@client_options
def wallet_address(client: Client) -> None:
    """Print the wallet's addresses, newest last (one made if there is none)."""
    addresses = client.call("wallet.addresses") or [client.call("wallet.new")]
    client.show({"addresses": addresses}, "\n".join(addresses))


@wallet.command("balance")
@client_options
def wallet_balance(client: Client) -> None:
    """Print what the wallet may spend, and its coinbases not yet mature."""
    balance = client.call("wallet.balance")
    client.show(
        balance,
        lambda: (
            f"{format_coins(balance['spendable'])} spendable,"
            f" {format_coins(balance['immature'])} immature"
        ),
    )


@wallet.command("send")
@click.argument("address")
@click.argument("amount")
@click.option(
    "--fee-rate",
    type=click.IntRange(1, 1_000_000),
    default=2,
    show_default=True,
    help="Base units a byte.",
)
@client_options
def wallet_send(address: str, amount: str, fee_rate: int, client: Client) -> None:
    """Pay AMOUNT coins to ADDRESS; print the transaction's id."""
    sent = client.call(
        "wallet.send", address=address, amount=parse_coins(amount), fee_rate=fee_rate
    )
    client.show(sent, lambda: f"{sent['txid']} (fee {format_coins(sent['fee'])})")


@wallet.command("history")
@client_options
def wallet_history(client: Client) -> None:
    """Print the wallet's transactions, newest first."""
    entries = client.call("wallet.history")

    def lines() -> str:
        return (
            "\n".join(
                f"{entry['txid']} {format_coins(entry['amount']):>20}"
                f" {'unconfirmed' if entry['height'] is None else 'height ' + str(entry['height'])}"
                for entry in entries
            )
            or "no transactions yet"
        )

    client.show({"transactions": entries}, lines)


@main.group("chain")
def chain_group() -> None:
    """The node's chain: its tip, blocks, transactions, peers."""


@chain_group.command("info")
@client_options
def chain_info(client: Client) -> None:
    """Print height, tip, work, difficulty and the mempool's size."""
    info = client.call("info")
    client.show(info, lambda: fields(info))


@chain_group.command("block")
@click.argument("block")
@client_options
def chain_block(block: str, client: Client) -> None:
    """Print a block, by hash or height."""
    found = client.call("block", id=block)
    client.show(found, lambda: fields(found))


@chain_group.command("tx")
@click.argument("txid")
@client_options
def chain_tx(txid: str, client: Client) -> None:
    """Print a transaction of the mempool or the chain."""
    found = client.call("tx", txid=txid)
    client.show(found, lambda: fields(found))


@chain_group.command("generate")
@click.argument("count", type=click.IntRange(1, 1000))
@click.option("--to", "address", metavar="ADDRESS", help="Pay here (default: the wallet).")
@client_options
def chain_generate(count: int, address: str | None, client: Client) -> None:
    """Mine COUNT blocks at once (local chain only); print their hashes."""
    hashes = client.call("generate", count=count, **({"address": address} if address else {}))
    client.show({"blocks": hashes}, "\n".join(hashes))


@chain_group.command("peers")
@client_options
def chain_peers(client: Client) -> None:
    """Print the node's ledger peers and the addresses it banned."""
    peers = client.call("peers")
    banned = client.call("banned")
    client.show(
        {"peers": peers, "banned": banned},
        lambda: (
            "\n".join([json.dumps(peer) for peer in peers] + [json.dumps(b) for b in banned])
            or "no peers"
        ),
    )
