"""The wallet and chain commands as a user runs them against a `shoal node`: each prints
text or, with --json, one JSON object; a refusal is one sentence and exit status 1."""

from __future__ import annotations

import json
import stat

import pytest
from conftest import wait_for
from ledgernode import LedgerProcess

from shoal.ledger.params import LOCAL
from shoal.ledger.primitives import COIN


@pytest.fixture
def node(tmp_path):
    folder = tmp_path / "node"
    folder.mkdir()
    started = LedgerProcess(folder)
    started.start()
    yield started
    started.kill()


def cli(shoal_cli, node: LedgerProcess, *args: str):
    """Run one command against node; its result."""
    return shoal_cli.run(*args, "--state", str(node.state), timeout=120)


def as_json(shoal_cli, node: LedgerProcess, *args: str) -> dict:
    result = cli(shoal_cli, node, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_mine_pay_and_look_up_as_a_user_does(shoal_cli, node):
    mined = as_json(shoal_cli, node, "chain", "generate", str(LOCAL.coinbase_maturity + 1))
    assert len(mined["blocks"]) == LOCAL.coinbase_maturity + 1
    info = as_json(shoal_cli, node, "chain", "info")
    assert info["height"] == LOCAL.coinbase_maturity + 1 and info["tip"] == mined["blocks"][-1]
    assert info["chain"] == "local" and info["difficulty"] == 1.0
    balance = as_json(shoal_cli, node, "wallet", "balance")
    assert balance["spendable"] == 2 * 50 * COIN  # heights 1 and 2 have matured

    to = as_json(shoal_cli, node, "wallet", "new")["address"]
    assert to.startswith("lshoal1")
    sent = as_json(shoal_cli, node, "wallet", "send", to, "1.25", "--fee-rate", "3")
    tx = as_json(shoal_cli, node, "chain", "tx", sent["txid"])
    assert tx["confirmations"] == 0 and sent["fee"] == 3 * tx["size"]
    assert {"amount": 125_000_000, "to": to} in tx["outputs"]
    assert as_json(shoal_cli, node, "chain", "info")["mempool_transactions"] == 1

    as_json(shoal_cli, node, "chain", "generate", "1")
    assert as_json(shoal_cli, node, "chain", "tx", sent["txid"])["confirmations"] == 1
    block = as_json(shoal_cli, node, "chain", "block", str(LOCAL.coinbase_maturity + 2))
    assert sent["txid"] in block["transactions"] and block["confirmations"] == 1
    history = as_json(shoal_cli, node, "wallet", "history")["transactions"]
    assert history[0]["txid"] == sent["txid"] and history[0]["amount"] == -sent["fee"]

    text = cli(shoal_cli, node, "wallet", "balance")
    assert text.returncode == 0 and "spendable" in text.stdout and "immature" in text.stdout
    keys = node.chain_folder / "wallet.keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600


def test_refusals_are_one_sentence_and_exit_1(shoal_cli, node, tmp_path):
    broke = cli(shoal_cli, node, "wallet", "send", node.address_new(), "5")
    assert broke.returncode == 1 and "Insufficient funds" in broke.stderr
    main_address = "shoal1p464qfd4tr6966k9j3y9ze6fcd3n9huqgllu2h4lxxwzdkwe7duvs99vx7n"
    wrong_chain = cli(shoal_cli, node, "wallet", "send", main_address, "1")
    assert wrong_chain.returncode == 1 and "another chain" in wrong_chain.stderr
    unknown = cli(shoal_cli, node, "chain", "block", "999")
    assert unknown.returncode == 1 and "no block at height 999" in unknown.stderr
    for result in (broke, wrong_chain, unknown):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    nobody = shoal_cli.run("chain", "info", "--state", str(tmp_path / "empty"))
    assert nobody.returncode == 1 and "no node is running" in nobody.stderr
    twice = shoal_cli.run("node", "--chain", "local", "--state", str(node.state), "--port", "0")
    assert twice.returncode == 1 and "another shoal node runs the local chain" in twice.stderr


def test_a_payment_reaches_a_node_that_mines(shoal_cli, node, tmp_path):
    (tmp_path / "miner").mkdir()
    miner = LedgerProcess(tmp_path / "miner")
    miner.start(node, mine=node.address_new(), block_time=0.2)
    try:
        as_json(shoal_cli, node, "chain", "generate", str(LOCAL.coinbase_maturity + 1))
        sent = as_json(shoal_cli, node, "wallet", "send", node.address_new(), "2")
        # The --mine node takes the payment into a block of its own within a few blocks.
        wait_for(
            lambda: as_json(shoal_cli, node, "chain", "tx", sent["txid"])["confirmations"] >= 1,
            60,
            0.2,
            "the miner did not mine the payment",
        )
        assert as_json(shoal_cli, miner, "chain", "info")["mining"] is True
    finally:
        miner.kill()
