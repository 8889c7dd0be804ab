"""Tally service kit: the small shared shell every service stands in. Nothing runs at import time."""
