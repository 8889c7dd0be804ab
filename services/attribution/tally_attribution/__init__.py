"""Tally attribution: HTTP ingest of ad events and the CPA attribution processor."""
