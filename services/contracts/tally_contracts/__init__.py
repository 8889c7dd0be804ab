"""Tally contracts service: the system of record for contracts, their versions, approvals and audit trail."""
