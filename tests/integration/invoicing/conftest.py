"""Invoicing integration fixtures (defined in invoicing_support, shared with the tests)."""

from .invoicing_support import inv_dsn, inv_pool, make_client

__all__ = ["inv_dsn", "inv_pool", "make_client"]
