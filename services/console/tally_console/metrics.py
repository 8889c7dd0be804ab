"""Every metric the console gateway exports beside the kit's HTTP metrics (name, type, meaning)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ConsoleMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        #: proxied requests by target service and outcome (the upstream status, or unreachable / timeout)
        self.proxied = Counter("tally_console_proxied_requests_total", "Requests proxied to a service, by service and outcome",
                               ["service", "outcome"], registry=registry)
        #: server-sent event streams currently relayed to browsers
        self.open_streams = Gauge("tally_console_open_event_streams", "Server-sent event streams being relayed",
                                  ["service"], registry=registry)
        #: one-click demo tokens minted (only ever non-zero with TALLY_CONSOLE_DEMO=true)
        self.demo_tokens = Counter("tally_console_demo_tokens_total", "Demo tokens minted", registry=registry)
