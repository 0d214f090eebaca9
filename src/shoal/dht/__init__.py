"""The Mainline DHT (BEP 5) and shoal's keyword index on it."""
