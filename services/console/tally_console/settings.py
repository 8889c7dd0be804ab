"""The console gateway's settings (environment variables), validated all at once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from tally_kit.settings import Setting, Settings, boolean, load, non_empty, port, positive_int

#: the built web app (``npm run build`` writes it here)
DEFAULT_STATIC_DIR = Path(__file__).resolve().parents[1] / "web" / "dist"

#: the services the gateway proxies: ``/api/<name>/...`` goes to ``TALLY_CONSOLE_<NAME>_URL``
UPSTREAMS: tuple[tuple[str, int], ...] = (("contracts", 8081), ("attribution", 8082), ("metering", 8083), ("invoicing", 8084))


def base_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http(s) URL such as http://127.0.0.1:8081")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return raw.strip().rstrip("/")


SPEC: tuple[Setting, ...] = (
    Setting("TALLY_CONSOLE_HOST", "HTTP bind address", "127.0.0.1", non_empty),
    Setting("TALLY_CONSOLE_PORT", "HTTP port", "8080", port),
    *(Setting(f"TALLY_CONSOLE_{name.upper()}_URL", f"base URL of the {name} service", f"http://127.0.0.1:{p}", base_url)
      for name, p in UPSTREAMS),
    Setting("TALLY_CONSOLE_STATIC_DIR", "the built web app (index.html and assets/)", str(DEFAULT_STATIC_DIR), non_empty),
    Setting("TALLY_CONSOLE_UPSTREAM_TIMEOUT_S",
            "seconds to wait for a service's answer (server-sent event streams are exempt)", "60", positive_int),
    Setting("TALLY_CONSOLE_DEMO",
            "demo mode: GET /api/demo/users mints one-click tokens per role with the local secret; never in production",
            "false", boolean),
    Setting("TALLY_CONSOLE_LOG_LEVEL", "log level", "INFO", non_empty),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    return load(SPEC, environ)


def upstream_urls(settings: Settings) -> dict[str, str]:
    """``{"contracts": "http://127.0.0.1:8081", ...}`` from loaded settings."""
    return {name: settings[f"console_{name}_url"] for name, _ in UPSTREAMS}
