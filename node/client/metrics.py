"""The gateway's Prometheus metrics (``GET /metrics``)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FAST = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
SLOW = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("cocoon_client_requests", "Requests by endpoint and outcome", ["endpoint", "outcome"],
                                registry=r)
        self.tokens = Counter("cocoon_client_tokens", "Tokens in verified and failed receipts", ["kind"], registry=r)
        self.receipts = Counter("cocoon_client_receipts", "Receipts checked, by result", ["result"], registry=r)
        self.spent = Counter("cocoon_client_paid_nanoton", "nanoTON paid for verified answers (this run)", registry=r)
        self.proxy_failures = Counter("cocoon_client_proxy_failures", "Proxies passed over, by reason", ["reason"],
                                      registry=r)
        self.chain_ops = Counter("cocoon_client_chain_operations", "Escrow operations sent", ["op"], registry=r)
        self.overhead = Histogram("cocoon_client_overhead_seconds",
                                  "Time the gateway adds: authorizing (validation, voucher, state) and verifying",
                                  ["step"], buckets=FAST, registry=r)
        self.latency = Histogram("cocoon_client_request_seconds", "Whole request time", ["endpoint"], buckets=SLOW,
                                 registry=r)
        self.first_token = Histogram("cocoon_client_first_token_seconds", "Time to the first streamed chunk",
                                     ["endpoint"], buckets=SLOW, registry=r)
        self.budget = Gauge("cocoon_client_budget_nanoton", "The budget", registry=r)
        self.settled = Gauge("cocoon_client_settled_nanoton", "Paid in total (all channels)", registry=r)
        self.deposited = Gauge("cocoon_client_deposited_nanoton", "Held in live channels", registry=r)
