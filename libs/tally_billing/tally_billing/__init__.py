"""Tally billing domain library (pure: imports no I/O library).

Modules: ``money`` (currencies, exact arithmetic, the one rounding function, allocation),
``periods`` (billing periods in a contract's zone), ``terms`` (typed terms, validation, JSON),
``versions`` (effective versions), ``rating`` (flat / graduated / volume rate cards), ``cpm``,
``cpa``, ``attribution``, ``aggregate`` (mergeable running totals), ``invoice_lines``, and
``examples`` (the README's terms JSON).
"""
