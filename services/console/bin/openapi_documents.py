"""Print the OpenAPI documents the console calls, as one JSON object ``{service: document}``, without
running any service: each service's ``openapi_spec`` builds the same document it serves at
``/openapi.json``. ``web/scripts/gen-api.mjs`` turns them into the console's API types.

    python services/console/bin/openapi_documents.py
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from typing import Any, cast

#: service (as behind the gateway's /api/<service>/) → (module, function building its document)
DOCUMENTS: dict[str, tuple[str, str]] = {
    "contracts": ("tally_contracts.openapi_spec", "spec"),
    "attribution": ("tally_attribution.openapi_spec", "spec"),
    "metering": ("tally_metering.openapi_spec", "spec"),
    "invoicing": ("tally_invoicing.openapi_spec", "build_spec"),
    "pacing": ("tally_pacing.openapi_spec", "spec"),
}


def documents() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for service, (module, function) in DOCUMENTS.items():
        build = cast(Callable[[], Any], getattr(importlib.import_module(module), function))
        out[service] = build()
    from tally_console.openapi_spec import spec

    out["console"] = spec(demo=True)
    return out


def main() -> int:
    json.dump(documents(), sys.stdout, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
