"""The console gateway's settings (environment variables), validated all at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tally_kit.settings import Spec, boolean, load, non_empty, port, positive_int, setting

#: the built web app (``npm run build`` writes it here)
DEFAULT_STATIC_DIR = Path(__file__).resolve().parents[1] / "web" / "dist"


def base_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http(s) URL such as http://127.0.0.1:8081")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return raw.strip().rstrip("/")


@dataclass(frozen=True, kw_only=True)
class ConsoleSettings:
    console_host: str = setting("TALLY_CONSOLE_HOST", "HTTP bind address", "127.0.0.1", non_empty)
    console_port: int = setting("TALLY_CONSOLE_PORT", "HTTP port", "8080", port)
    # the services the gateway proxies: ``/api/<name>/...`` goes to ``TALLY_CONSOLE_<NAME>_URL``
    console_contracts_url: str = setting("TALLY_CONSOLE_CONTRACTS_URL", "base URL of the contracts service", "http://127.0.0.1:8081",
                                         base_url)
    console_attribution_url: str = setting("TALLY_CONSOLE_ATTRIBUTION_URL", "base URL of the attribution service",
                                           "http://127.0.0.1:8082", base_url)
    console_metering_url: str = setting("TALLY_CONSOLE_METERING_URL", "base URL of the metering service", "http://127.0.0.1:8083", base_url)
    console_invoicing_url: str = setting("TALLY_CONSOLE_INVOICING_URL", "base URL of the invoicing service", "http://127.0.0.1:8084",
                                         base_url)
    console_pacing_url: str = setting("TALLY_CONSOLE_PACING_URL", "base URL of the pacing service", "http://127.0.0.1:8085", base_url)
    console_static_dir: str = setting("TALLY_CONSOLE_STATIC_DIR", "the built web app (index.html and assets/)", str(DEFAULT_STATIC_DIR),
                                      non_empty)
    console_upstream_timeout_s: int = setting(
        "TALLY_CONSOLE_UPSTREAM_TIMEOUT_S", "seconds to wait for a service's answer (server-sent event streams are exempt)", "60",
        positive_int)
    console_demo: bool = setting(
        "TALLY_CONSOLE_DEMO",
        "demo mode: GET /api/demo/users mints one-click tokens per role with the local secret; never in production", "false", boolean)
    console_log_level: str = setting("TALLY_CONSOLE_LOG_LEVEL", "log level", "INFO", non_empty)


SPEC = Spec(ConsoleSettings)


def load_settings(environ: Mapping[str, str] | None = None) -> ConsoleSettings:
    return load(SPEC, environ)


def upstream_urls(settings: ConsoleSettings) -> dict[str, str]:
    """``{"contracts": "http://127.0.0.1:8081", ...}`` from loaded settings."""
    return {"contracts": settings.console_contracts_url, "attribution": settings.console_attribution_url,
            "metering": settings.console_metering_url, "invoicing": settings.console_invoicing_url, "pacing": settings.console_pacing_url}
