"""The unstructured overlay (Gnutella-style): neighbour links, flooding, random walks,
dynamic querying, ultrapeers and leaves."""
