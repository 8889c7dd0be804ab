"""Tally invoicing: closed periods and adjustments become invoices, payout statements, credit
notes and a balanced double-entry ledger. Nothing runs at import time."""
