"""The proxy's Prometheus metrics (prometheus-client), on a registry of its own."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("cocoon_proxy_requests", "Client requests by endpoint and HTTP status",
                                ["endpoint", "status"], registry=r)
        self.tokens = Counter("cocoon_proxy_tokens", "Tokens served, by class", ["kind"], registry=r)
        self.latency = Histogram("cocoon_proxy_request_seconds", "Time from request to the end of the answer",
                                 ["endpoint", "stream"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("cocoon_proxy_first_token_seconds", "Time from request to the first streamed chunk",
                              ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream = Histogram("cocoon_proxy_worker_seconds", "Time from sending a job to the worker to its receipt",
                                  ["endpoint", "stream"], buckets=LATENCY_BUCKETS, registry=r)
        self.routing = Counter("cocoon_proxy_routing_decisions", "Routing outcomes (chosen, retried, no_room)",
                               ["outcome"], registry=r)
        self.workers = Gauge("cocoon_proxy_workers_connected", "Workers connected and admitted", registry=r)
        self.in_flight = Gauge("cocoon_proxy_jobs_in_flight", "Jobs running on workers", registry=r)
        self.exposure = Gauge("cocoon_proxy_exposure_nanoton", "Authorized by clients but not yet claimed",
                              registry=r)
        self.billed = Counter("cocoon_proxy_billed_nanoton", "What clients were billed by receipts", registry=r)
        self.worker_pay = Counter("cocoon_proxy_worker_pay_nanoton",
                                  "Pay owed to workers: each job's fee (signed as it is sent)", registry=r)
        self.claims = Counter("cocoon_proxy_claims", "Claims from client channels by outcome", ["status"], registry=r)
        self.claimed = Counter("cocoon_proxy_claimed_nanoton", "Value settled on chain by claims", registry=r)
        self.claim_fees = Counter("cocoon_proxy_claim_fees_nanoton", "Fees paid for claims", registry=r)
        self.refused_workers = Counter("cocoon_proxy_workers_refused", "Workers refused or dropped, by reason",
                                       ["reason"], registry=r)
        self.reports = Counter("cocoon_proxy_reputation_reports", "Reputation reports by outcome", ["status"],
                               registry=r)
        self.worker_score = Gauge("cocoon_proxy_worker_score", "Each connected worker's on-chain reputation score "
                                  "as routing weighs it (0-10000)", ["worker"], registry=r)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
