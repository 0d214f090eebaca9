"""The ledger end to end, as Bitcoin Core's functional tests: `shoal node` processes on
loopback, driven through their RPC."""

from __future__ import annotations

import pytest
from conftest import wait_for
from ledgernode import LedgerProcess, same_tip

from shoal.ledger.params import LOCAL
from shoal.ledger.primitives import COIN
from shoal.node.rpc import RpcError

MATURITY = LOCAL.coinbase_maturity
SYNC = 60.0


@pytest.fixture
def nodes(tmp_path):
    """Up to five node processes, stopped (or killed) at the end."""
    made: list[LedgerProcess] = []

    def make(name: str, host: str = "127.0.0.1") -> LedgerProcess:
        folder = tmp_path / name
        folder.mkdir()
        node = LedgerProcess(folder, host=host)
        made.append(node)
        return node

    yield make
    for node in made:
        node.kill()


def synced(nodes: list[LedgerProcess], timeout: float = SYNC) -> None:
    """Wait until every node has the same tip."""
    wait_for(lambda: same_tip(nodes), timeout, 0.1, "the nodes did not agree on a tip")


def in_mempool(node: LedgerProcess, txid: str) -> bool:
    """Whether txid waits in node's mempool."""
    return confirmations(node, txid) == 0


def confirmations(node: LedgerProcess, txid: str) -> int:
    """txid's confirmations on node's chain (0 in its mempool); -1 if it knows it not."""
    try:
        return int(node.rpc("tx", txid=txid)["confirmations"])
    except RpcError:
        return -1


def test_payments_propagate_and_confirm(nodes):
    a, b, c = nodes("a"), nodes("b"), nodes("c")
    a.start()
    b.start(a)
    c.start(b)  # a line: a - b - c, so everything c hears passed through b
    a.rpc("generate", count=MATURITY + 2)
    synced([a, b, c])
    assert a.rpc("wallet.balance")["spendable"] == 3 * 50 * COIN  # heights 1..3 have matured
    to_b = b.address_new()
    sent = a.rpc("wallet.send", address=to_b, amount=7 * COIN, fee_rate=2)
    wait_for(lambda: in_mempool(c, sent["txid"]), SYNC, 0.1, "the payment did not reach c")
    assert sent["fee"] == 2 * c.rpc("tx", txid=sent["txid"])["size"]
    c.rpc("generate", count=1)  # c mines it; the block goes back through b to a
    synced([a, b, c])
    assert all(confirmations(node, sent["txid"]) == 1 for node in (a, b, c))
    assert b.rpc("wallet.balance")["spendable"] == 7 * COIN
    history = b.rpc("wallet.history")
    assert [entry["txid"] for entry in history] == [sent["txid"]]
    assert history[0]["amount"] == 7 * COIN


def test_a_partitioned_minority_fork_is_reorganised_away(nodes):
    a, b, c = nodes("a"), nodes("b"), nodes("c")
    a.start()
    b.start(a)
    c.start(a)
    c.rpc("generate", count=MATURITY + 1)  # c's own coins, matured
    synced([a, b, c])
    fork_point = a.height()
    # The partition: c restarts dialling no one (the others knew it on a port it left).
    c.stop()
    c.start()
    payment = c.rpc("wallet.send", address=a.address_new(), amount=3 * COIN)
    c.rpc("generate", count=2)  # the minority's fork: its payment confirmed there
    assert confirmations(c, payment["txid"]) == 2
    a.rpc("generate", count=4)  # the majority's longer chain
    synced([a, b])
    assert c.height() == fork_point + 2 and a.height() == fork_point + 4
    # Healing: c meets a again and takes the chain with the most work.
    c.rpc("addpeer", address=a.address)
    synced([a, b, c])
    assert c.height() == fork_point + 4
    # The losing fork's payment returns to the mempool, and reaches the others again.
    wait_for(lambda: in_mempool(c, payment["txid"]), SYNC, 0.1, "not back in c's mempool")
    wait_for(lambda: in_mempool(a, payment["txid"]), SYNC, 0.1, "not relayed to a")
    a.rpc("generate", count=1)
    synced([a, b, c])
    assert confirmations(a, payment["txid"]) == 1


def test_a_majority_miner_double_spends_across_a_reorganisation(nodes):
    """A 51% attack: the attacker pays a merchant, lets it confirm on the public chain, then
    releases a longer chain it mined in private that spends the same coin to itself. The
    rules say the most work wins: the merchant's payment is undone, exactly one spend stays."""
    public, merchant, attacker = nodes("public"), nodes("merchant"), nodes("attacker")
    public.start()
    merchant.start(public)
    attacker.start(public)
    public.rpc("generate", count=MATURITY + 1)
    synced([public, merchant, attacker])
    # The attacker gets one coin of 30 coins: its only coin, so both spends must take it.
    funding = public.rpc("wallet.send", address=attacker.address_new(), amount=30 * COIN)
    wait_for(lambda: in_mempool(public, funding["txid"]), SYNC, 0.1, "funding not pooled")
    public.rpc("generate", count=1)
    synced([public, merchant, attacker])
    pay_merchant = attacker.rpc("wallet.send", address=merchant.address_new(), amount=10 * COIN)
    wait_for(lambda: in_mempool(public, pay_merchant["txid"]), SYNC, 0.1, "payment not relayed")
    # In private (restarted, peerless, its mempool gone) it spends the coin again, to itself.
    attacker.stop()
    attacker.start()
    assert confirmations(attacker, pay_merchant["txid"]) == -1
    to_self = attacker.rpc("wallet.send", address=attacker.address_new(), amount=10 * COIN)
    attacker.rpc("generate", count=4)
    public.rpc("generate", count=2)  # the merchant sees its payment confirmed twice
    synced([public, merchant])
    assert confirmations(merchant, pay_merchant["txid"]) == 2
    attacker.rpc("addpeer", address=public.address)
    synced([public, merchant, attacker])
    assert confirmations(merchant, to_self["txid"]) == 4  # in the first of its 4 blocks
    assert confirmations(merchant, pay_merchant["txid"]) == -1  # gone: it conflicts
    assert merchant.rpc("wallet.balance")["spendable"] == 0


def test_kill_9_mid_sync_restarts_with_a_consistent_utxo_set(nodes):
    source, fresh = nodes("source"), nodes("fresh")
    source.start()
    to = source.address_new()
    for _ in range(4):
        source.rpc("generate", count=100, address=to)
    fresh.start(source)
    wait_for(lambda: fresh.height() >= 20, SYNC, 0.005, "the sync did not start")
    fresh.kill()
    # Killed mid-sync: what it saved (commits come in batches while it catches up) is short
    # of the source's chain.
    assert fresh.height_on_disk() < source.height()
    fresh.start(source)
    synced([source, fresh], 120.0)
    assert fresh.rpc("utxos") == source.rpc("utxos")


def test_kill_9_mid_reorganisation_loses_no_confirmed_payment(nodes):
    """A node killed while it swaps a losing branch for a longer one restarts consistent,
    finishes the move, and puts the losing branch's payment back in its mempool, whence it
    reaches the others and is mined again: what was confirmed is never simply lost."""
    a, b = nodes("a"), nodes("b")
    a.start()
    b.start(a)
    a.rpc("generate", count=MATURITY + 1)
    synced([a, b])
    b.stop()
    b.start()  # apart from here on: each mines its own branch
    payment = a.rpc("wallet.send", address=b.address_new(), amount=4 * COIN)
    a.rpc("generate", count=200)  # the payment is confirmed in the first
    assert confirmations(a, payment["txid"]) == 200
    fork = MATURITY + 1
    b.rpc("generate", count=400, address=b.address_new())
    a.rpc("addpeer", address=b.address)
    # The move takes 32 blocks a step; the state on disk says when it is under way.
    with a.watch_reorg() as under_way:
        wait_for(under_way, 120.0, 0.0005, "the reorganisation")
        a.kill()
    assert a.reorg_on_disk() is not None  # killed with the move under way
    assert fork <= a.height_on_disk() < fork + 400
    a.start(b)
    synced([a, b], 120.0)
    assert a.rpc("utxos") == b.rpc("utxos")
    wait_for(lambda: in_mempool(a, payment["txid"]), SYNC, 0.1, "not back in a's mempool")
    wait_for(lambda: in_mempool(b, payment["txid"]), SYNC, 0.1, "not relayed to b")
    b.rpc("generate", count=1)
    synced([a, b])
    assert confirmations(a, payment["txid"]) == 1
