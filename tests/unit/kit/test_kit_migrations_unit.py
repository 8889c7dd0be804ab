"""The kit's own migrations as the runner finds them (no database): shipped beside the code, numbered
in their own namespace, the DDL the audit and idempotency modules document, and never mistaken for
one of the service copies they replace."""

from __future__ import annotations

from pathlib import Path

import pytest

from tally_kit import audit, idempotency
from tally_kit.migrations import FORMER_COPIES, KIT, Migration, MigrationError, discover, kit_migrations


def test_the_kit_ships_its_migrations_in_order_under_its_namespace() -> None:
    assert [m.label for m in kit_migrations()] == ["kit/0001_audit_log", "kit/0002_idempotency"]
    assert {m.namespace for m in kit_migrations()} == {KIT}


def test_the_modules_ddl_is_the_kit_migration() -> None:
    audit_log, idempotency_keys = kit_migrations()
    assert audit.AUDIT_DDL == audit_log.sql and "CREATE TABLE audit_log" in audit_log.sql
    assert idempotency.IDEMPOTENCY_DDL == idempotency_keys.sql and "CREATE TABLE idempotency_keys" in idempotency_keys.sql


def test_a_kit_migration_is_not_one_of_the_copies_it_replaces() -> None:
    for m in kit_migrations():
        assert m.checksum not in FORMER_COPIES[m.name]


def test_a_service_migration_has_no_namespace_in_its_label(tmp_path: Path) -> None:
    (tmp_path / "0001_contracts.sql").write_text("CREATE TABLE c (id int);")
    assert [m.label for m in discover(tmp_path)] == ["0001_contracts"]
    assert Migration(7, "x", "").label == "0007_x"


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql"])
def test_badly_named_files_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        discover(tmp_path)
