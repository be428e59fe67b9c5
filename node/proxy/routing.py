"""Which worker serves a request: the one expected to finish it first, weighted by reputation.

Among the connected workers of the requested model whose coefficient is at most the client's
maximum and that have room (jobs in flight below their ``max_jobs``), the proxy picks the lowest

    cost = (in_flight + 1) × average job time / weight,    weight = score / SCORE_MAX

where the average job time is an exponentially decayed mean of the worker's recent jobs and the
score is the worker's on-chain reputation (0..10000, :func:`wrappers.reputation.score_of`; a worker
without a record has the neutral prior's 5000). ``in_flight + 1`` is the expected wait *including*
this job, so at equal load the better-reputed worker wins and at equal reputation the idle one does.
Ties go to the cheaper coefficient, then to fewer jobs in flight, then to the least recently chosen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

from wrappers.reputation import SCORE_MAX

DEFAULT_JOB_SECONDS = 1.0   # the prior of a worker that has not finished a job yet
DECAY = 0.2                 # weight of the newest job in the decayed average
MIN_WEIGHT = 1e-3           # a worker with score 0 is last, not infinitely far


@dataclass
class WorkerLoad:
    """What routing knows of one connected worker."""
    key: str                  # the worker's owner address (raw form)
    model: str
    coefficient: int
    max_jobs: int
    in_flight: int = 0
    avg_job_s: float = DEFAULT_JOB_SECONDS
    score: int = SCORE_MAX // 2
    up: bool = True
    last_chosen: float = 0.0
    jobs_done: int = field(default=0)

    def observe(self, seconds: float) -> None:
        """Fold a finished job's duration into the decayed average."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        self.avg_job_s = seconds if self.jobs_done == 0 else (1 - DECAY) * self.avg_job_s + DECAY * seconds
        self.jobs_done += 1

    @property
    def has_room(self) -> bool:
        return self.up and self.in_flight < self.max_jobs

    def expected_wait(self) -> float:
        return (self.in_flight + 1) * self.avg_job_s

    def cost(self) -> float:
        return self.expected_wait() / max(self.score / SCORE_MAX, MIN_WEIGHT)


def eligible(workers: Iterable[WorkerLoad], model: str, max_coefficient: int,
             exclude: frozenset[str] = frozenset()) -> list[WorkerLoad]:
    """Connected, up workers of ``model`` whose coefficient the client accepts (room not checked)."""
    return [w for w in workers if w.up and w.model == model and w.coefficient <= max_coefficient
            and w.key not in exclude]


def choose(workers: Iterable[WorkerLoad], model: str, max_coefficient: int,
           exclude: frozenset[str] = frozenset()) -> Optional[WorkerLoad]:
    """The worker to send the job to, or None when no eligible worker has room."""
    best, best_key = None, None
    for w in eligible(workers, model, max_coefficient, exclude):
        if not w.has_room:
            continue
        k = (w.cost(), w.coefficient, w.in_flight, w.last_chosen)
        if best_key is None or k < best_key:
            best, best_key = w, k
    return best


def retry_after(workers: Iterable[WorkerLoad], model: str, max_coefficient: int) -> int:
    """Seconds a refused client should wait: about the time the least loaded eligible worker needs
    to finish one job (at least 1, at most 60)."""
    ws = eligible(workers, model, max_coefficient)
    if not ws:
        return 5
    return max(1, min(60, math.ceil(min(w.avg_job_s for w in ws))))
