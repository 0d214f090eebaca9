"""The ledger: a UTXO blockchain with proof of work that every node keeps and checks in full."""
