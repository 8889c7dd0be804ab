"""Tally billing domain library (pure: imports no I/O library).

Modules: ``money`` (currencies, exact arithmetic, the one rounding function, allocation),
``periods`` (billing periods in a contract's zone), ``terms`` (typed terms, validation, JSON),
``versions`` (effective versions), ``rating`` (flat / graduated / volume rate cards), ``cpm``,
``cpa``, ``attribution``, ``usage`` (the ledger's 15-minute grid), ``routing`` (contracts as
routing tables), ``totals`` (the one model of a period: mergeable totals, lines, ratings, line
differences), ``ledger`` (the usage ledger and its derivation into totals), ``invoice_lines``
(those lines as documents bill them, each rounded once), and ``examples`` (the README's terms
JSON).
"""
