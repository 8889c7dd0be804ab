"""Tally traffic simulator (seeded, deterministic) and the independent recomputation of what it should bill."""
