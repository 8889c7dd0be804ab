"""The `make bench` harness: one module per benchmark, shared helpers in ``common``."""
