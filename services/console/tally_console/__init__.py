"""Tally console gateway: the built React app plus a same-origin proxy to the Tally services."""
