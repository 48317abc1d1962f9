"""Domain-free helpers: money, ids, crypto, time, egress."""
