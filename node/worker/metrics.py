"""The worker's Prometheus metrics (served on its local ``/metrics`` listener)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TOKEN_CLASSES = ("prompt", "cached", "completion", "reasoning")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.jobs = Counter("cocoon_worker_jobs", "Jobs served, by outcome", ["outcome"], registry=r)
        self.tokens = Counter("cocoon_worker_tokens", "Tokens served, by class", ["token_class"], registry=r)
        self.tokens_per_second = Gauge("cocoon_worker_tokens_per_second",
                                       "Completion tokens per second of the last finished job", registry=r)
        self.queue = Gauge("cocoon_worker_queue_length", "Jobs waiting for a slot", registry=r)
        self.active = Gauge("cocoon_worker_active_jobs", "Jobs generating now", registry=r)
        self.latency = Histogram("cocoon_worker_job_seconds", "Time from job arrival to its receipt", registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 120, 300))
        self.ttft = Histogram("cocoon_worker_first_token_seconds", "Time from job arrival to its first token",
                              registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
        self.earned = Gauge("cocoon_worker_earned_nanoton", "What the served jobs earned (receipts signed)", registry=r)
        self.paid = Gauge("cocoon_worker_paid_nanoton", "What the proxies' vouchers cover", registry=r)
        self.claimed = Gauge("cocoon_worker_claimed_nanoton", "What claims have moved on chain", registry=r)
        self.connected = Gauge("cocoon_worker_link_up", "1 while the link to the proxy is open", registry=r)
        for c in TOKEN_CLASSES:
            self.tokens.labels(c)
        for o in ("ok", "cancelled", "timeout", "error", "refused"):
            self.jobs.labels(o)
