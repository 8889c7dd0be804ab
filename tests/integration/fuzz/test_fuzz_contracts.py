"""Schemathesis against the contracts API, on a database of its own holding one contract of the
fuzzing advertiser (so generated requests also reach an existing contract, not only 404s)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tally_billing.examples import cpm_terms_json
from tally_contracts.api import build_app
from tally_contracts.openapi_spec import spec
from tally_contracts.settings import SPEC
from tally_kit.auth import TokenVerifier
from tally_kit.settings import load
from tally_streams.avro import SchemaCatalog
from tests.integration.fuzz.fuzz_support import (
    SECRET,
    ServedApp,
    auth_headers,
    cases,
    fuzz,
    migrated_database,
    unsupported_method_answers,
)

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "contracts" / "migrations"
#: every role that may call the contracts API (tenants read their own; ops drafts; approvers approve)
CALLERS = ("ops", "approver", "finance", "admin", "advertiser", "partner")


@dataclass
class Seeded:
    server: ServedApp
    contract_id: str


@pytest.fixture(scope="module")
def seeded(catalog: SchemaCatalog) -> Iterator[Seeded]:
    with migrated_database(MIGRATIONS) as dsn:
        settings = load(SPEC, {"TALLY_CONTRACTS_DATABASE_URL": dsn})
        server = ServedApp(lambda: build_app(settings, verifier=TokenVerifier(SECRET), catalog=catalog,
                                             background=False)).start()
        terms = cpm_terms_json()
        terms["common"]["advertiser_id"] = "adv-fuzz"
        resp = requests.post(f"{server.base_url}/contracts", json={"name": "Fuzzed", "terms": terms},
                             headers=auth_headers("ops"), timeout=30)
        assert resp.status_code == 201, resp.text
        yield Seeded(server, str(resp.json()["id"]))
        server.stop()


@pytest.mark.parametrize(("role", "method", "path"), cases(spec(), CALLERS))
def test_every_contracts_answer_matches_the_document(seeded: Seeded, role: str, method: str, path: str) -> None:
    existing = {"id": seeded.contract_id, **({"version": 1} if "{version}" in path else {})} if "{id}" in path else None
    fuzz(seeded.server.schema(), method, path, role, base_url=seeded.server.base_url,
         path_parameters=existing)


def test_every_contracts_path_answers_an_undocumented_method_with_405_and_allow(seeded: Seeded) -> None:
    assert unsupported_method_answers(seeded.server.base_url, spec(), "ops") == []
