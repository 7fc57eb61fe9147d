"""The router: admission control, one global EDF queue, timer-driven expiry, pull-based
dispatch to workers, and exactly one terminal state per request.

A client request carries N images. Each image is one scheduler job, so the images of one
request may be batched with other requests' images; the request completes when all its
images are done, and fails or is dropped as a whole as soon as one image does. All jobs of a
request share its deadline.

Everything runs on one thread (the event loop): `submit` from the front ends, the
`PoolListener` callbacks from the worker pool, and the expiry timer. Time comes only from
the injected `Clock`, so tests drive the router with a virtual clock and a fake pool.

Time is the client's: a request's clock starts when its first byte reached the server (the
front end passes that instant as `arrival_s`), so parsing, decoding and a busy event loop eat
into its slack where the scheduler can see them; the front end reports when the response's
last byte was written (`response_written`), and the server's SLO metrics count that.

Calibration: the table is a prior. Every finished batch tells the `LatencyModel` what it really
took (dispatch to result) against what the table said; policies plan with its high-quantile
prediction (`latency_scale` x profiled + `overhead_s`, scheduling/calibration.py), plus a high
quantile of the time from resolving a request to having written its response. A start-up
probe (the workers' timed warm-up) seeds the model when the table was profiled on a machine
that differs by more than `probe_threshold`.

Expiry: the EDF head is the only request that can expire next, so one timer, armed at the
head's drop point (the latest time at which even the fastest subnet at batch 1 could still
finish at its typical cost: `deadline - drop_overhead - drop_scale x fastest`), answers
expired requests at once, whether or not a worker is free. The same drop rule (`cannot_meet`)
is applied before every dispatch and at admission. It judges by the typical cost (the
compute fit and the median transport), not the plan's high quantile: a drop is final, and a
request left less slack than the plan's reserve still makes its deadline most of the time
(the reserve is there so that SlackFit does not fill the slack of a whole batch to its edge).
On a VM where the reserve and the response-writing tail reached 5-12 ms a batch, for a batch
of one that took ~2 ms, the reserve-based rule answered requests with 504 that a batch of one
could still have served in time (docs/calibration.md has the live A/B).

Lifecycle: a request whose client stops waiting ends as CANCELLED at once (`cancel`); its
images still queued are skipped when they reach the head (never put in a batch), one already
in a running batch is computed and dropped. A batch watchdog (one timer, at the earliest
in-flight batch's hang point) declares a worker hung when its batch has run
max(hang_factor x planned, planned + hang_min_s): its images are re-queued or answered and
the worker is killed (the pool restarts it). A batch whose worker crashed, hung or reported
an error is retried, each image at most `max_batch_attempts` times in all, then answered
with an error: a poison batch cannot take workers down forever.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TextIO

import numpy as np

from superserve.errors import (
    ConfigError,
    DeadlineExceededError,
    InvalidInputError,
    OverloadedError,
    RequestCancelledError,
    ShuttingDownError,
    SuperServeError,
    WorkerFailedError,
)
from superserve.runtime.clock import Clock, TimerHandle
from superserve.runtime.protocol import BatchTask, WorkerPool
from superserve.scheduling.base import (
    Plan,
    Policy,
    QueueView,
    cannot_meet,
    drop_slack_s,
    rate_guard_binds_of,
)
from superserve.scheduling.batching import BatchWaitConfig, hold_until
from superserve.scheduling.bursts import BurstTracker
from superserve.scheduling.calibration import CalibrationConfig, LatencyModel, ResponseTail
from superserve.scheduling.edf import EDFQueue
from superserve.scheduling.feedback import FRONT_END_SHARE, FeedbackConfig, MissFeedback
from superserve.scheduling.rate import RateEstimator
from superserve.types import Outcome

log = logging.getLogger(__name__)

# ends that count as misses for the feedback; a completion counts as one when it ends after
# its deadline, or when its response is written after it (Router.response_written)
_MISSES = (Outcome.DROPPED_DEADLINE, Outcome.REJECTED)
# ... except requests that reached the router with less than FRONT_END_SHARE of their SLO
# left (`Router._plan_can_answer`; scheduling/feedback.py says why)
# between requests, read the workers' results at most this often without waiting for the
# loop's reader callback: when parsing hundreds of ready requests makes one loop iteration
# last tens of milliseconds, a worker that finished its batch otherwise idles until the
# iteration ends (live: 50-120 ms between ~10 ms batches, goodput ~0; see `Router.submit`)
_POLL_EVERY_S = 0.001
# a batch smaller than the queue can fill is re-planned with its own response tail
# (`Router._own_tail`) when that tail is at least this much shorter than the first plan's
OWN_TAIL_MIN_S = 1e-4

__all__ = ["BATCH_LOG_FIELDS", "InferenceResult", "Router", "RouterConfig", "RouterListener"]

# the columns of RouterConfig.batch_log: the router's clock at the result (s), the worker, the
# subnet and batch size, then (ms) the table's latency (plus actuation), what the plan
# reserved, what it took from dispatch to result, the worker's own compute, the head's slack
# at dispatch (deadline - dispatch), how many of its requests' deadlines had passed; then the
# calibration after it: the plan's scale, its compute reserve and the response-writing tail (ms);
# last, the policy rule that planned it (Plan.rule; a one-rule policy: its name)
BATCH_LOG_FIELDS = ("t_s", "worker", "subnet", "batch", "profiled_ms", "planned_ms",
                    "observed_ms", "compute_ms", "head_slack_ms", "late", "plan_scale",
                    "reserve_ms", "response_tail_ms", "rule")


@dataclass(frozen=True)
class RouterConfig:
    max_queue: int = 1024  # images waiting in the EDF queue; more are refused (429)
    max_images_per_request: int = 256  # N of one request's [N, C, H, W] input
    # a hand-set per-batch reserve on top of what calibration learns (an override; 0 default)
    overhead_s: float = 0.0
    retry_after_s: float = 1.0  # Retry-After sent with an overload refusal
    # Learn what batches really cost (scheduling/calibration.py) and plan with a high quantile
    # of it. Off: plan with the table as is, plus overhead_s.
    calibrate: bool = True
    calibration: CalibrationConfig | None = None  # None: CalibrationConfig()
    # raise SlackFit's rate-guard headroom while requests miss their SLO on the client's
    # clock, are dropped or refused (scheduling/feedback.py); None: no feedback
    feedback: FeedbackConfig | None = field(default_factory=FeedbackConfig)
    # an idle worker holds its next batch up to a couple of ms after the head arrived, while
    # the arrival rate says more requests are due (scheduling/batching.py): fewer, fuller
    # batches, less CPU per request; None: every batch goes at once
    batch_wait: BatchWaitConfig | None = field(default_factory=BatchWaitConfig)
    # start-up check: when the workers' timed warm-up differs from the table by more than
    # this factor (either way), warn and start calibration from the measured factor
    probe_threshold: float = 1.2
    # refuse (429) at once a request that the queue ahead of it makes hopeless even at the
    # fastest subnet's best throughput, instead of queueing it to be dropped later
    admission_check: bool = True
    # Batch watchdog: a batch running longer than max(hang_factor x its planned time,
    # planned + hang_min_s) has a hung worker, which is killed and replaced. Wide on purpose:
    # a false alarm kills a healthy worker (seconds of restart and warm-up), a late one only
    # delays requests that are past saving anyway. The plan is a calibrated high quantile, so
    # honest batches stay within ~2x of it; 10x covers a GC pause or a stolen core on a
    # shared machine; the 2 s floor covers OS scheduling stalls that dwarf sub-ms batches.
    hang_factor: float = 10.0
    hang_min_s: float = 2.0
    # times an image may be in a batch that fails (worker crashed, hung or raised) before its
    # request is answered with an error instead of retried (3: two retries)
    max_batch_attempts: int = 3
    # a CSV of every finished batch (BATCH_LOG_FIELDS), for studying the calibration and the
    # policy offline; "" (default): none. Line-buffered: one short write per batch.
    batch_log: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.max_queue, int) and self.max_queue >= 1):
            raise ConfigError(f"max_queue must be an int >= 1, got {self.max_queue!r}")
        if not (isinstance(self.max_images_per_request, int) and self.max_images_per_request >= 1):
            raise ConfigError("max_images_per_request must be an int >= 1, got "
                              f"{self.max_images_per_request!r}")
        if not self.overhead_s >= 0:
            raise ConfigError(f"overhead_s must be >= 0, got {self.overhead_s!r}")
        if not self.retry_after_s > 0:
            raise ConfigError(f"retry_after_s must be > 0, got {self.retry_after_s!r}")
        if not self.probe_threshold >= 1:
            raise ConfigError(f"probe_threshold must be >= 1, got {self.probe_threshold!r}")
        if not (self.hang_factor >= 1 and self.hang_min_s > 0):
            raise ConfigError(f"hang_factor must be >= 1 and hang_min_s > 0, got "
                              f"{self.hang_factor!r}, {self.hang_min_s!r}")
        if not (isinstance(self.max_batch_attempts, int) and self.max_batch_attempts >= 1):
            raise ConfigError(f"max_batch_attempts must be an int >= 1, got "
                              f"{self.max_batch_attempts!r}")


@dataclass
class InferenceResult:
    """What a client learns. `error` is set for every outcome but a completion."""

    request_id: int
    outcome: Outcome
    arrival_s: float
    deadline_s: float
    end_s: float = 0.0
    logits: np.ndarray | None = None  # [N, K] float32 when completed
    error: SuperServeError | None = None
    deadline_met: bool = False
    subnet_id: int = -1  # the subnet of the batch that finished the request
    subnet_accuracy: float = float("nan")  # mean profiled accuracy over its images
    batch_size: int = 0  # size of the batch that finished the request
    queue_s: float = 0.0  # arrival -> dispatch of the batch that finished the request
    admitted_s: float = math.nan  # when the router took it (arrival -> this: the front end)
    service_s: float = 0.0  # dispatch -> result of that batch, as the router saw it
    written_s: float = math.nan  # when the front end wrote the response's last byte
    batch_id: int = -1  # the router's id of the batch that finished the request
    batch_position: int = 0  # 1-based: the order in which that batch's requests finished

    @property
    def met_on_client_clock(self) -> bool:
        """Completed, and the response written by the deadline (first byte to last byte)."""
        return (self.outcome is Outcome.COMPLETED and not math.isnan(self.written_s)
                and self.written_s <= self.deadline_s)

    @property
    def latency_s(self) -> float:
        return self.end_s - self.arrival_s

    def raise_for_outcome(self) -> None:
        if self.error is not None:
            raise self.error


class RouterListener(Protocol):
    """Observability hooks (metrics); called on the event loop, must be cheap."""

    def on_terminal(self, result: InferenceResult) -> None: ...

    def on_batch(self, subnet_id: int, batch_size: int) -> None: ...

    def on_written(self, result: InferenceResult) -> None: ...

    def on_batch_timing(self, observed_s: float, predicted_s: float) -> None: ...


OnDone = Callable[["asyncio.Future[InferenceResult]"], None]


class _Request:
    __slots__ = ("acc_sum", "ended", "future", "n", "on_done", "remaining", "result")

    def __init__(self, result: InferenceResult, future: asyncio.Future[InferenceResult],
                 n: int, on_done: OnDone | None = None) -> None:
        self.result = result
        self.future = future
        self.on_done = on_done
        self.n = n
        self.remaining = n
        self.acc_sum = 0.0
        self.ended = False  # terminal (counted); its future may be cancelled instead of set


@dataclass(slots=True)
class _Job:
    request: _Request
    index: int  # which image of the request
    image: np.ndarray  # [C, H, W]
    attempts: int = 0  # batches it was in that failed


@dataclass
class _InFlight:
    batch_id: int
    subnet: int
    jobs: list[_Job]
    dispatched_s: float
    load_s: float = 0.0
    planned_s: float = 0.0  # what the plan reserved for it (scale x profiled + overhead)
    hang_at_s: float = math.inf  # the watchdog declares its worker hung from then on
    rule: str = ""  # the policy rule that planned it (Plan.rule, or the policy's name)


@dataclass
class _Stats:
    submitted: int = 0
    terminal: dict[Outcome, int] = field(default_factory=lambda: {o: 0 for o in Outcome})
    batches: int = 0
    holds: int = 0  # times an idle worker held its next batch for company (batch wait)
    requeued: int = 0
    hung: int = 0  # workers the watchdog killed
    workers_lost: int = 0  # deaths (crash, kill, hang); a removal is not one
    workers_removed: int = 0  # taken out by the operator (retire_worker, then the pool)
    late_at_door: int = 0  # refused as late before their bodies were decoded (refuse_late)
    # dispatched batches by the rule that planned them (Plan.rule; a one-rule policy: its name)
    plans: dict[str, int] = field(default_factory=dict)


class Router:
    def __init__(self, policy: Policy, pool: WorkerPool, clock: Clock,
                 config: RouterConfig | None = None, listener: RouterListener | None = None,
                 rate_tau_s: float = 1.0) -> None:
        self.policy = policy
        self.table = policy.table
        # the policy's fastest choice: the shared drop rule's threshold
        self.min_latency_s = getattr(policy, "min_latency_s", policy.table.fastest_s)
        self.pool = pool
        self._poll = getattr(pool, "poll", None)  # pools that can be read between requests
        self._polled_s = -math.inf
        self.clock = clock
        self.config = config or RouterConfig()
        self.listener = listener
        self.stats = _Stats()
        self._queue: EDFQueue[_Job] = EDFQueue()
        self._idle: list[int] = []  # ready workers with nothing in flight
        self._inflight: dict[int, _InFlight] = {}  # worker id -> its batch
        self._worker_subnet: dict[int, int] = {}  # what each worker last ran (for baselines)
        self._ready: set[int] = set()
        self._retired: set[int] = set()  # being removed by the operator (retire_worker)
        self._open: dict[asyncio.Future[InferenceResult], _Request] = {}  # admitted, open
        self._ids = itertools.count()
        self._batch_ids = itertools.count()
        self._timer: TimerHandle | None = None
        self._timer_at = float("inf")
        self._watchdog: TimerHandle | None = None
        self._watchdog_at = math.inf
        self._hold: TimerHandle | None = None  # the batch wait's timer (scheduling/batching.py)
        self._hold_at = math.inf
        self._held_until = -math.inf  # the last hold that ran out: not held again
        # the share of its SLO the newest request had left when it got here, queued or not
        # (QueueView.entry_share; all of it before any)
        self._entry_share = 1.0
        self._front_end_behind = getattr(policy, "front_end_behind", None)
        self._draining = False
        self._drained: asyncio.Event | None = None
        self._rate = RateEstimator(rate_tau_s)
        fb = self.config.feedback
        self.feedback = MissFeedback(fb) if fb is not None else None
        self._rate_guard_binds = rate_guard_binds_of(policy)  # _with_feedback
        self._early_drop_batch = getattr(policy, "early_drop_batch", None)  # _drop_early
        # images per window (one SLO, and shorter ones) at the peak of recent bursts, for
        # SlackFit's guard
        window = getattr(policy, "burst_window_s", None)
        self._bursts = (BurstTracker(window, fractions=getattr(policy, "burst_fractions", (1.0,)))
                        if window else None)
        t = self.table
        self.calibration = LatencyModel(t.fastest_s, max(max(r) for r in t.lat_s),
                                        self.config.calibration)
        # resolve -> last byte written (encode + write + a busy loop), per position in the
        # batch (fed per request: its quantile refreshed at most every 50 ms)
        self._response_tail = ResponseTail(self.calibration.config)
        # the batches whose responses are still being written: batch id -> [responses not
        # yet written, (position, delay) of the first written, of the last]
        self._writing: dict[int, list] = {}
        # requests with an `on_done` that batch_done finished, answered once it is done
        self._delivering: list[_Request] | None = None
        self._max_batch = self.table.batch_sizes[-1]
        self.probe_factor: float | None = None  # the start-up check's measured factor
        self.last_compute_s = 0.0  # the worker's own compute time of the last batch
        self._logged_scale = self.latency_scale
        # admission: the best throughput per worker (images / s) of the fastest subnet the
        # policy serves (Clipper+ serves one: its own, not the table's fastest)
        served = getattr(policy, "served_subnets", None) or range(len(t.lat_s))
        self._admit_rate_qps = max(b / min(t.lat_s[i][j] for i in served)
                                   for j, b in enumerate(t.batch_sizes))
        self._started = False
        self._batch_log: TextIO | None = None
        if self.config.batch_log:
            self._batch_log = open(self.config.batch_log, "w", buffering=1)  # noqa: SIM115
            self._batch_log.write(",".join(BATCH_LOG_FIELDS) + "\n")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if not self._started:
            self._started = True
            self.pool.start(self)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def open_requests(self) -> int:
        return len(self._open)

    @property
    def ready_workers(self) -> int:
        return len(self._ready)

    @property
    def entry_share(self) -> float:
        """The share of its SLO the newest request had left when it reached the router (1.0
        before any): under the policy's `front_end_share`, a front end behind on its core."""
        return self._entry_share

    @property
    def front_end_behind(self) -> bool:
        """Whether the policy's front-end rule binds now (SlackFit.front_end_behind: it plans
        like the fastest fixed subnet while it does; a policy without the rule: never)."""
        f = self._front_end_behind
        return f is not None and f(self._entry_share)

    @property
    def overhead_s(self) -> float:
        """Per-batch reserve beyond latency_scale x the profiled latency: the hand-set part
        plus, when calibrating, the model's fixed part and the response-writing tail."""
        if not self.config.calibrate:
            return self.config.overhead_s
        return (self.config.overhead_s + self.calibration.plan_overhead_s
                + self.response_tail_s)

    @property
    def cycle_overhead_s(self) -> float:
        """The typical per-batch cost beyond latency_scale x profiled (the fit's fixed part
        plus the median transport; overhead_s holds reserves for the tail on top)."""
        if not self.config.calibrate:
            return self.config.overhead_s
        m = self.calibration
        return self.config.overhead_s + m.overhead_s + m.transport_s

    @property
    def drop_overhead_s(self) -> float:
        """The drop rule's per-batch cost beyond `drop_scale` x profiled: the typical one
        (`cycle_overhead_s`), not the plan's reserve (see the module docstring)."""
        return self.cycle_overhead_s

    @property
    def drop_scale(self) -> float:
        """The drop rule's multiple of the profiled latency: the compute fit's scale."""
        return self.calibration.scale if self.config.calibrate else 1.0

    @property
    def latency_scale(self) -> float:
        """Planned cost of a batch = this x its profiled latency + overhead_s."""
        return self.calibration.plan_scale if self.config.calibrate else 1.0

    @property
    def response_tail_s(self) -> float:
        """High quantile of resolve -> last byte written at a batch's first position (0 until
        16 responses were seen); a batch of b responses adds `response_per_image_s` x (b-1)."""
        return self._response_tail.base_s

    @property
    def response_per_image_s(self) -> float:
        """What each response written ahead of it adds to a response's tail (measured, or
        the prior until 16 batches of several responses were seen)."""
        return self._response_tail.per_image_s

    def batch_overhead_s(self, batch: int) -> float:
        """`overhead_s` for a batch of `batch` responses: the responses written before its
        last one add to its tail."""
        if not self.config.calibrate or batch <= 1:
            return self.overhead_s
        return self.overhead_s + self._response_tail.reserve_s(batch) - self.response_tail_s

    def response_written(self, result: InferenceResult, written_s: float) -> None:
        """The front end wrote the last byte of `result`'s response at `written_s` (inf: it
        never went out whole)."""
        result.written_s = written_s
        if (self.feedback is not None and result.deadline_met
                and not result.met_on_client_clock  # on time here, late at the client
                and self._plan_can_answer(result)):
            self.feedback.reclassify(self.clock.now(), result.arrival_s,
                                     result.deadline_s - result.arrival_s)
        # its batch's record while that batch's responses are being written
        w = self._writing.get(result.batch_id) if result.batch_position else None
        if (result.outcome is Outcome.COMPLETED and result.end_s <= written_s
                and math.isfinite(written_s)):
            delay = written_s - result.end_s
            self._response_tail.add(written_s, result.batch_position, delay)
            if w is not None:
                if w[1] is None:
                    w[1] = (result.batch_position, delay)
                w[2] = (result.batch_position, delay)
        if w is not None:
            w[0] -= 1
            if w[0] <= 0:
                del self._writing[result.batch_id]
                if w[1] is not None:
                    self._response_tail.add_batch(
                        written_s if math.isfinite(written_s) else self.clock.now(), w[1], w[2])
        if self.listener is not None:
            self.listener.on_written(result)

    def _check_probe(self, worker_id: int) -> None:
        """The start-up check: the worker's timed warm-up against the table."""
        info = getattr(self.pool, "info", None)
        try:
            probe = (info(worker_id) or {}).get("probe") if callable(info) else None
        except (KeyError, AttributeError):
            probe = None
        if not probe:
            return
        ratios = [sec / self.table.latency_s(int(i), int(b)) for i, b, sec in probe
                  if 0 <= int(i) < len(self.table) and sec > 0]
        if not ratios:
            return
        factor = float(sorted(ratios)[len(ratios) // 2])
        first = self.probe_factor is None
        self.probe_factor = factor
        thr = self.config.probe_threshold
        if first and (factor > thr or factor < 1.0 / thr):
            log.warning("start-up check: this machine runs the table's subnets x%.2f of their "
                        "profiled latency (median of %d probes; the table was profiled on %s); "
                        "planning starts from the measured figures, not the table's%s", factor,
                        len(ratios), self.table.provenance.get("machine")
                        or self.table.provenance.get("device", "an unknown machine"),
                        "" if self.config.calibrate else " (calibration is off: not applied)")
            if self.config.calibrate and self.calibration.samples == 0:
                self.calibration.seed(self.clock.now(), factor)
        elif first:
            log.info("start-up check: table latencies hold on this machine (x%.2f, %d probes)",
                     factor, len(ratios))

    def _observe_batch(self, now: float, worker_id: int, fl: _InFlight, compute_s: float
                       ) -> None:
        m = self.calibration
        observed = now - fl.dispatched_s
        if self.listener is not None:  # against what the plan reserved for it
            self.listener.on_batch_timing(observed, fl.planned_s)
        profiled = self.table.latency_s(fl.subnet, len(fl.jobs)) + fl.load_s
        m.observe(now, profiled, observed, compute_s)
        if self._batch_log is not None:
            late = sum(j.request.result.deadline_s < now for j in fl.jobs)
            slack = fl.jobs[0].request.result.deadline_s - fl.dispatched_s
            self._batch_log.write(
                f"{now:.6f},{worker_id},{fl.subnet},{len(fl.jobs)},{profiled * 1e3:.4f},"
                f"{fl.planned_s * 1e3:.4f},{observed * 1e3:.4f},{compute_s * 1e3:.4f},"
                f"{slack * 1e3:.4f},{late},{m.plan_scale:.4f},{m.reserve_s * 1e3:.4f},"
                f"{self.response_tail_s * 1e3:.4f},{fl.rule}\n")
        scale = m.plan_scale
        if abs(math.log(scale / self._logged_scale)) > math.log(1.25):
            log.info("calibration: batches now cost x%.2f of the table + %.2f ms (compute fit "
                     "x%.2f + %.2f ms, q%g reserve %.2f ms, transport median %.2f ms, %d "
                     "batches); was x%.2f", scale, m.plan_overhead_s * 1e3, m.scale,
                     m.overhead_s * 1e3, m.config.quantile * 100, m.reserve_s * 1e3,
                     m.transport_s * 1e3, m.samples, self._logged_scale)
            self._logged_scale = scale

    @property
    def busy_workers(self) -> int:
        return len(self._inflight)

    @property
    def draining(self) -> bool:
        return self._draining

    def begin_drain(self) -> None:
        """Stop admitting (503); what is queued or in flight is still served."""
        self._draining = True
        log.info("router draining: %d open requests", len(self._open))

    async def drain(self, timeout_s: float) -> int:
        """Stop admitting, wait up to `timeout_s` for every admitted request to end, then
        answer the rest as refused (503). Returns how many had to be refused."""
        self.begin_drain()
        if self._open:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout_s)
            except TimeoutError:
                pass
        left = list(self._open.values())
        for req in left:
            self._finish(req, Outcome.REJECTED, ShuttingDownError(
                f"server shut down before request {req.result.request_id} was served"))
        self._queue.clear()
        self._cancel_timer()
        self._cancel_hold()
        return len(left)

    def close(self) -> None:
        """Release what the router holds beyond the loop (the batch log); after the pool."""
        if self._batch_log is not None:
            self._batch_log.close()
            self._batch_log = None

    # ------------------------------------------------------------------ admission
    def submit(self, images: np.ndarray, slo_s: float,
               arrival_s: float | None = None, on_done: OnDone | None = None
               ) -> asyncio.Future[InferenceResult]:
        """Admit one request of N images ([N, C, H, W] float32, already validated) with a
        latency SLO counted from `arrival_s` (when its first byte reached the server, on
        this router's clock; default: now); the future always resolves (never raises) to its
        terminal result.

        `on_done(future)`, when given, is called once the future is done, like a done
        callback; but for a request its batch completes, right after that batch's results
        (and the dispatch of the worker's next batch), on the same loop turn, not behind
        the requests that arrived meanwhile and wait on the loop to be parsed (those waits
        were most of the resolve -> last byte tail under load). It must not raise."""
        now = self.clock.now()
        if self._poll is not None and now - self._polled_s >= _POLL_EVERY_S:
            self._polled_s = now  # a finished batch frees its worker now, not after the
            self._poll()  # rest of this loop iteration's requests have been parsed
        n = len(images)
        req = self._arrive(now, n, slo_s, arrival_s, on_done)
        result = req.result
        if self._draining:
            return self._refuse(req, Outcome.REJECTED, ShuttingDownError(
                "server is shutting down and admits no new requests"))
        if n == 0:
            return self._refuse(req, Outcome.REJECTED, InvalidInputError(
                "request has no images"))
        if n > self.config.max_images_per_request:
            # Checked at the edge too; repeated here so the router never queues what it
            # could never schedule.
            return self._refuse(req, Outcome.REJECTED, OverloadedError(
                f"request has {n} images, more than max_images_per_request="
                f"{self.config.max_images_per_request}", self.config.retry_after_s))
        if len(self._queue) + n > self.config.max_queue:
            return self._refuse(req, Outcome.REJECTED, OverloadedError(
                f"queue full: {len(self._queue)} images waiting, max_queue="
                f"{self.config.max_queue}", self.config.retry_after_s))
        if self.config.calibrate:  # with no batch for a while, evidence fades
            self.calibration.tick(now)
            self._response_tail.expire(now)
        dscale, doverhead = self.drop_scale, self.drop_overhead_s
        if cannot_meet(result.deadline_s, now, self.table, doverhead,
                       min_latency_s=self.min_latency_s, latency_scale=dscale):
            return self._refuse_late(req, now, slo_s, dscale, doverhead)
        if self.config.admission_check and self._ready:  # final too: the typical cost
            wait = self._clear_time_s(len(self._queue) + n, dscale, doverhead)
            if now + wait > result.deadline_s:
                return self._refuse(req, Outcome.REJECTED, OverloadedError(
                    f"overloaded: {len(self._queue)} images are queued ahead of this request; "
                    f"serving them and it takes at least {wait * 1e3:.1f} ms even on the "
                    f"fastest subnet, more than the {(result.deadline_s - now) * 1e3:.1f} ms "
                    "left of its SLO", self.config.retry_after_s))
        self._open[req.future] = req
        for i in range(n):
            self._queue.push(result.deadline_s, _Job(req, i, images[i]))
        self._dispatch()  # arms the expiry timer too
        return req.future

    def late(self, arrival_s: float, slo_s: float) -> bool:
        """The admission's deadline test alone: whether a request whose first byte arrived at
        `arrival_s` with this SLO can no longer be met even by the fastest choice (what
        `submit` refuses as DROPPED_DEADLINE). False while the router drains (`submit` says
        why it refuses then)."""
        return not self._draining and cannot_meet(
            arrival_s + slo_s, self.clock.now(), self.table, self.drop_overhead_s,
            min_latency_s=self.min_latency_s, latency_scale=self.drop_scale)

    def refuse_late(self, images: int, slo_s: float, arrival_s: float,
                    on_done: OnDone | None = None) -> asyncio.Future[InferenceResult]:
        """A request of `images` images that a front end found `late` before decoding it ends
        here as DROPPED_DEADLINE, counted as `submit` counts it (the rate and burst estimates
        see it, the entry share too); its future is returned, done. Shedding a late request
        before its body is parsed and validated keeps a front end that fell behind on its
        core from spending its CPU on answers nobody can use (docs/serving.md, "Late at the
        door")."""
        now = self.clock.now()
        req = self._arrive(now, images, slo_s, arrival_s, on_done)
        self.stats.late_at_door += 1
        return self._refuse_late(req, now, slo_s, self.drop_scale, self.drop_overhead_s)

    def _arrive(self, now: float, images: int, slo_s: float, arrival_s: float | None,
                on_done: OnDone | None) -> _Request:
        """A request's record from its arrival on: its id, future and deadline (from its first
        byte, `arrival_s`, never later than now), and what the estimates learn from it."""
        fut: asyncio.Future[InferenceResult] = asyncio.get_running_loop().create_future()
        t0 = now if arrival_s is None or arrival_s > now else arrival_s
        result = InferenceResult(request_id=next(self._ids), outcome=Outcome.REJECTED,
                                 arrival_s=t0, deadline_s=t0 + slo_s, admitted_s=now)
        self.stats.submitted += 1
        if slo_s > 0:  # what it brings, whether it is queued or refused
            self._entry_share = (result.deadline_s - now) / slo_s
        self._rate.observe(now, images)  # images are what the policy batches
        if self._bursts is not None:
            self._bursts.observe(now, images)
        return _Request(result, fut, images, on_done)

    def _refuse_late(self, req: _Request, now: float, slo_s: float, scale: float,
                     overhead: float) -> asyncio.Future[InferenceResult]:
        return self._refuse(req, Outcome.DROPPED_DEADLINE, DeadlineExceededError(
            f"SLO of {slo_s * 1e3:.3g} ms cannot be met: "
            f"{(now - req.result.arrival_s) * 1e3:.3g} ms have passed since the request's "
            f"first byte and the fastest choice needs "
            f"{(self.min_latency_s * scale + overhead) * 1e3:.3g} ms"))

    def _clear_time_s(self, images: int, scale: float, overhead: float) -> float:
        """A lower bound on the time the ready workers need to serve `images` queued images:
        the policy's fastest subnet (Clipper+: its one subnet) at its best-throughput batch
        size, no idle gaps. A lower bound on purpose: on the Azure code trace at 1,000 req/s
        (2026-11-29) an estimate with the per-batch cycle cost and the batch in flight (its
        whole planned reserve) refused ~7,000 requests of 20,000 where this refuses ~700-
        1,000, and showed no gain: slackfit met 0.29 and 0.39 with it, 0.32-0.57 with this
        (the trace's run-to-run spread is that wide)."""
        best_rate = self._admit_rate_qps * max(1, len(self._ready))
        return max(images / best_rate, self.min_latency_s) * scale + overhead

    def _refuse(self, req: _Request, outcome: Outcome,
                error: SuperServeError) -> asyncio.Future[InferenceResult]:
        self._finish(req, outcome, error)
        return req.future

    # ------------------------------------------------------------------ terminal states
    def _finish(self, req: _Request, outcome: Outcome, error: SuperServeError | None) -> None:
        """The single place a request becomes terminal (and is counted)."""
        r = req.result
        if req.ended:
            return
        req.ended = True
        if req.future.cancelled() and (outcome is not Outcome.CANCELLED or error is None):
            # its caller stopped waiting without `cancel`: that is how it ended
            outcome, error = Outcome.CANCELLED, RequestCancelledError(
                f"request {r.request_id} was cancelled by its caller")
        r.outcome = outcome
        r.error = error
        r.end_s = self.clock.now()
        if outcome is Outcome.COMPLETED:
            r.deadline_met = r.end_s <= r.deadline_s
        self._open.pop(req.future, None)
        self.stats.terminal[outcome] += 1
        if (self.feedback is not None and (outcome is Outcome.COMPLETED or outcome in _MISSES)
                and self._plan_can_answer(r)):
            self.feedback.observe(r.end_s, not r.deadline_met, r.arrival_s,
                                  r.deadline_s - r.arrival_s)
        if not req.future.done():
            req.future.set_result(r)
        if req.on_done is not None:
            if self._delivering is not None:  # a batch's results: at the end of batch_done
                self._delivering.append(req)
            else:  # as a done callback: never inside the caller's own `submit`
                req.future.get_loop().call_soon(req.on_done, req.future)
        if self.listener is not None:
            self.listener.on_terminal(r)
        if self._drained is not None and not self._open:
            self._drained.set()

    def cancel(self, future: asyncio.Future[InferenceResult],
               reason: str = "its client stopped waiting") -> bool:
        """The request behind `future` (from `submit`) has nobody waiting for it any more (an
        HTTP client that disconnected, a gRPC call cancelled or past its deadline): it ends
        as CANCELLED now. Its images still queued are skipped when they reach the head, never
        batched. False when it had already ended."""
        req = self._open.get(future)
        if req is None:
            return False
        self._finish(req, Outcome.CANCELLED, RequestCancelledError(
            f"request {req.result.request_id} cancelled: {reason}"))
        return True

    def _gone(self, req: _Request) -> bool:
        """Whether nobody waits for `req` (it ended, or its caller cancelled its future: then
        it ends as CANCELLED here)."""
        if not req.future.done():
            return False
        if not req.ended:
            self._finish(req, Outcome.CANCELLED, None)
        return True

    def _drop_expired_heads(self, now: float) -> None:
        q, table, overhead, scale = self._queue, self.table, self.drop_overhead_s, self.drop_scale
        while q:
            job = q.peek()
            if self._gone(job.request):
                q.pop()  # a sibling image already ended this request, or it was cancelled
                continue
            if not cannot_meet(q.head_deadline_s(), now, table, overhead,
                               min_latency_s=self.min_latency_s, latency_scale=scale):
                return
            q.pop()
            r = job.request.result
            self._finish(job.request, Outcome.DROPPED_DEADLINE, DeadlineExceededError(
                f"request {r.request_id} missed its deadline in the queue: waited "
                f"{(now - r.arrival_s) * 1e3:.1f} ms of a "
                f"{(r.deadline_s - r.arrival_s) * 1e3:.1f} ms SLO, too little left for the "
                f"fastest choice ({self.min_latency_s * scale * 1e3:.2f} ms + "
                f"{overhead * 1e3:.2f} ms overhead)"))

    def _drop_early(self, now: float, queued: int, rate_qps: float) -> None:
        """The policy's early drop (base.drop_slack_s) for a queue of `queued`, after the
        plain rule has dropped what it drops (their own message)."""
        q = self._queue
        need = drop_slack_s(self.policy, queued, rate_qps, self.min_latency_s)
        if need <= self.min_latency_s:
            return
        need *= self.latency_scale
        # the overhead of the batch the head is kept for: SlackFit plans that batch with
        # its own response tail (`_own_tail`), so a kept head can be given it
        size = self._early_drop_batch
        overhead = self.overhead_s if size is None else self.batch_overhead_s(size(queued))
        cut = now + overhead + need
        while q and q.head_deadline_s() < cut:
            job = q.pop()
            if self._gone(job.request):
                continue
            r = job.request.result
            self._finish(job.request, Outcome.DROPPED_DEADLINE, DeadlineExceededError(
                f"request {r.request_id} dropped early: {(r.deadline_s - now) * 1e3:.1f} ms "
                f"of its {(r.deadline_s - r.arrival_s) * 1e3:.1f} ms SLO left, "
                f"{(r.deadline_s - now - overhead) * 1e3:.2f} ms after the "
                f"{overhead * 1e3:.1f} ms overhead margin: too little for a batch that "
                f"keeps up with the queue ({need * 1e3:.2f} ms needed), "
                f"with {len(q)} requests behind it"))

    # ------------------------------------------------------------------ expiry timer
    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = float("inf")

    def _arm_timer(self) -> None:
        if not self._queue:
            # left armed: it fires once, finds nothing to drop, and goes idle; cancelling
            # it here would make and cancel a loop timer per batch
            return
        # 1 us past the exact drop point, so that `cannot_meet` is robustly true there
        # despite float rounding of large monotonic clock values.
        at = (self._queue.head_deadline_s() - self.drop_overhead_s
              - self.min_latency_s * self.drop_scale + 1e-6)
        if self._timer_at <= at:
            # armed for no later: it fires, drops nothing that can still be met, re-arms.
            # (The typical cost moves with every batch that ends, so re-arming on every
            # change would replace a loop timer per batch.)
            return
        self._cancel_timer()
        self._timer_at = at
        self._timer = self.clock.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        # The loop may fire a timer up to its clock resolution early; the drop point is
        # what was meant, so judge at that instant at the earliest.
        now = max(self.clock.now(), self._timer_at)
        self._timer = None
        self._timer_at = float("inf")
        self._drop_expired_heads(now)
        self._dispatch()
        self._arm_timer()

    # ------------------------------------------------------------------ batch wait
    def _cancel_hold(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
            self._hold, self._hold_at = None, math.inf

    def _arm_hold(self, at: float) -> None:
        if self._hold is not None:
            if self._hold_at <= at:
                return  # an earlier hold re-dispatches first
            self._hold.cancel()
        else:
            self.stats.holds += 1
        self._hold_at = at
        self._hold = self.clock.call_at(at, self._on_hold)

    def _on_hold(self) -> None:
        # a loop timer may fire up to its resolution early (uvloop: 1 ms): the hold meant
        # to end at `_hold_at` has ended, whatever the clock says
        if self._hold_at < math.inf:  # (a call with no hold pending only dispatches)
            self._held_until = self._hold_at
        self._hold, self._hold_at = None, math.inf
        self._dispatch()

    # ------------------------------------------------------------------ dispatch
    @staticmethod
    def _plan_can_answer(r: InferenceResult) -> bool:
        """Whether `r`'s fate is evidence for the miss feedback: it reached the router with
        at least FRONT_END_SHARE of its SLO left (one that did not was held up before any
        plan could touch it; its outcome is counted everywhere else all the same)."""
        return not (r.admitted_s - r.arrival_s > FRONT_END_SHARE * (r.deadline_s - r.arrival_s))

    def _with_feedback(self, view: QueueView, now: float) -> QueueView:
        """The view with the miss feedback's boost as of now. The boost may be raised only
        where a raise changes a plan (SlackFit.rate_guard_binds; a policy without the rate
        guard: never)."""
        fb = self.feedback
        assert fb is not None
        binds = self._rate_guard_binds
        fb.set_can_raise(now, binds is not None and binds(view, fb.config.up, now))
        boost = fb.update(now)
        return view if boost == view.rate_boost else dataclasses.replace(view, rate_boost=boost)

    def _own_tail(self, view: QueueView, plan: Plan, now: float,
                  fill: int) -> tuple[QueueView, Plan]:
        """Re-plan a batch smaller than the queue can fill (`fill`) with its own response
        tail.

        The first plan reserves the tail of the largest batch the queue can fill (its last
        response waits for the ones written before it), but a smaller batch writes fewer
        responses. Under overload that reserve alone held SlackFit at batches of one: live,
        JSON 2,000 req/s, heads kept with 10-13 ms of slack, 0.1 ms a response written, a
        batch of one planned at ~12 ms (3 ms of it the tail of 32 responses) that took 1-2
        ms, so the worker served ~730 images a second of 2,000 for seconds on end.

        So batch sizes b between the plan's and `fill` are tried with the tail of b
        responses: the policy, left more slack, asks for f(b) requests (fewer as b grows,
        since the tail grows with b), and when f(b) >= b a batch of b on the subnet it chose
        fits the head's deadline with its own tail (a shorter batch of the same subnet costs
        no more). The largest such b is found by bisection, a few `decide` calls, only when
        the tails differ by OWN_TAIL_MIN_S; none: the first plan stands."""
        if view.overhead_s - self.batch_overhead_s(plan.batch_size) < OWN_TAIL_MIN_S:
            return view, plan
        sizes = [b for b in self.table.batch_sizes if plan.batch_size < b < fill]
        best = view, plan
        lo, hi = 0, len(sizes)  # sizes[:lo] fit their own tail, sizes[hi:] do not
        while lo < hi:
            mid = (lo + hi) // 2
            b = sizes[mid]
            v = dataclasses.replace(view, overhead_s=self.batch_overhead_s(b))
            p = self.policy.decide(v, now)
            if p is not None and p.batch_size >= b:
                best, lo = (v, Plan(p.subnet, b, p.load_s, p.rule)), mid + 1
            else:
                hi = mid
        return best

    def _dispatch(self) -> None:
        q = self._queue
        wait = None if self._draining else self.config.batch_wait
        while self._idle and q:
            now = self.clock.now()
            queued = len(q)  # the early-drop threshold is for the queue as it stands
            rate = self._rate.rate(now)
            if wait is not None:  # held: no drop pass now, the expiry timer answers meanwhile
                head = q.peek().request.result
                until = hold_until(wait, max(now, self._held_until), head.arrival_s,
                                   head.deadline_s - head.arrival_s, queued, rate,
                                   self.table.batch_sizes[-1])
                if until is not None:
                    self._arm_hold(until)
                    break
            self._drop_expired_heads(now)
            self._drop_early(now, queued, rate)
            if not q:
                break
            wid = self._idle[-1]
            head_req = q.peek().request
            head = head_req.result
            peaks = self._bursts.peaks(now) if self._bursts else ()
            # the tail of the largest batch the queue can fill: its last response waits
            # for the ones written before it
            fill = min(len(q), self._max_batch)
            view = QueueView(length=len(q), head_deadline_s=head.deadline_s, worker_id=wid,
                             worker_subnet=self._worker_subnet.get(wid),
                             arrival_rate_qps=rate,
                             overhead_s=self.batch_overhead_s(fill),
                             latency_scale=self.latency_scale,
                             burst_images=peaks[-1] if peaks else 0.0, burst_peaks=peaks,
                             head_slo_s=head.deadline_s - head.arrival_s,
                             cycle_overhead_s=self.cycle_overhead_s,
                             rate_boost=1.0 if self.feedback is None else self.feedback.boost,
                             head_images=min(head_req.remaining, len(q)),
                             head_queued_s=head.admitted_s, entry_share=self._entry_share)
            if self.feedback is not None:
                view = self._with_feedback(view, now)
            plan = self.policy.decide(view, now)
            if plan is None:
                break  # the policy prefers to wait; the next arrival or timer retries
            if plan.batch_size < fill:
                view, plan = self._own_tail(view, plan, now, fill)
            jobs: list[_Job] = []
            while q and len(jobs) < plan.batch_size:
                job = q.pop()
                if not self._gone(job.request):
                    jobs.append(job)
            if not jobs:
                continue
            self._idle.pop()
            bid = next(self._batch_ids)
            images = np.array([j.image for j in jobs])  # (np.stack: ~2.5 us more a batch)
            planned = ((self.table.latency_s(plan.subnet, len(jobs)) + plan.load_s)
                       * view.latency_scale + view.overhead_s)
            hang_at = now + max(planned * self.config.hang_factor,
                                planned + self.config.hang_min_s)
            rule = plan.rule or self.policy.name
            self._inflight[wid] = _InFlight(bid, plan.subnet, jobs, now, plan.load_s, planned,
                                            hang_at, rule)
            if hang_at < self._watchdog_at:
                self._arm_watchdog(hang_at)
            self._worker_subnet[wid] = plan.subnet
            self.stats.batches += 1
            self.stats.plans[rule] = self.stats.plans.get(rule, 0) + 1
            if self.listener is not None:
                self.listener.on_batch(plan.subnet, len(jobs))
            self.pool.submit(wid, BatchTask(bid, plan.subnet, images, plan.load_s))
        self._arm_timer()

    # ------------------------------------------------------------------ pool callbacks
    def worker_ready(self, worker_id: int) -> None:
        self._ready.add(worker_id)
        self._inflight.pop(worker_id, None)
        if worker_id not in self._idle:
            self._idle.append(worker_id)
        log.info("worker %d ready (%d ready)", worker_id, len(self._ready))
        self._check_probe(worker_id)
        self._dispatch()

    def batch_done(self, worker_id: int, batch_id: int, logits: np.ndarray,
                   service_s: float) -> None:
        fl = self._take_inflight(worker_id, batch_id)
        if fl is None:
            return
        if self._delivering is not None:  # nested in another's: that one delivers
            self._batch_results(worker_id, fl, logits, service_s)
            return
        self._delivering = []
        try:
            self._batch_results(worker_id, fl, logits, service_s)
        finally:
            deliver, self._delivering = self._delivering, None
            for req in deliver:
                try:
                    req.on_done(req.future)  # type: ignore[misc]
                except Exception:  # the caller's bug: the others still go
                    log.exception("a request's on_done raised")

    def _batch_results(self, worker_id: int, fl: _InFlight, logits: np.ndarray,
                       service_s: float) -> None:
        now = self.clock.now()
        self.last_compute_s = service_s
        self._observe_batch(now, worker_id, fl, service_s)
        acc = self.table.acc[fl.subnet]
        finished = 0
        for k, job in enumerate(fl.jobs):
            req = job.request
            if self._gone(req):
                continue
            r = req.result
            if r.logits is None:
                r.logits = np.zeros((req.n, logits.shape[1]), dtype=np.float32)
            r.logits[job.index] = logits[k]
            req.acc_sum += acc
            req.remaining -= 1
            if req.remaining == 0:
                r.subnet_id, r.batch_size = fl.subnet, len(fl.jobs)
                finished += 1
                r.batch_id, r.batch_position = fl.batch_id, finished
                r.subnet_accuracy = req.acc_sum / req.n
                r.queue_s = fl.dispatched_s - r.arrival_s
                r.service_s = now - fl.dispatched_s
                self._finish(req, Outcome.COMPLETED, None)
        if finished and self.config.calibrate:  # its responses' tail, per position
            self._writing[fl.batch_id] = [finished, None, None]
            if len(self._writing) > 256:  # a caller that never reports what it wrote
                del self._writing[next(iter(self._writing))]
        self._worker_free(worker_id)

    def batch_failed(self, worker_id: int, batch_id: int, message: str) -> None:
        fl = self._take_inflight(worker_id, batch_id)
        if fl is None:
            return
        log.error("worker %d failed batch %d: %s", worker_id, batch_id, message)
        self._retry_or_fail(fl, self.clock.now(),
                            f"worker {worker_id} failed on subnet {fl.subnet}: {message}")
        self._worker_free(worker_id)

    def worker_lost(self, worker_id: int, reason: str) -> None:
        """A worker died: re-queue its batch, or fail the requests that can no longer make
        their deadline. The pool restarts it and calls `worker_ready` again."""
        self._ready.discard(worker_id)
        if worker_id in self._idle:
            self._idle.remove(worker_id)
        self._worker_subnet.pop(worker_id, None)
        fl = self._inflight.pop(worker_id, None)
        requeued = 0
        if fl is not None:
            requeued = self._retry_or_fail(fl, self.clock.now(),
                                           f"worker {worker_id} died ({reason})")
        if worker_id in self._retired:  # removed on purpose, not lost (even if it died draining)
            self._retired.discard(worker_id)
            self.stats.workers_removed += 1
            log.info("worker %d removed (%s); re-queued %d images", worker_id, reason, requeued)
        else:
            self.stats.workers_lost += 1
            log.warning("worker %d lost (%s); re-queued %d images", worker_id, reason, requeued)
        self._dispatch()

    def retire_worker(self, worker_id: int) -> bool:
        """An operator is removing `worker_id`: dispatch nothing more to it and stop counting
        it as capacity (policies plan with the workers that remain); a batch it has in flight
        still completes. Returns whether one is in flight: call again until it is not, then
        remove the worker from the pool (server/admin.py). Idempotent. The pool's report that
        follows is a removal (logged at info, `stats.workers_removed`), not a loss."""
        self._ready.discard(worker_id)
        self._retired.add(worker_id)
        if worker_id in self._idle:
            self._idle.remove(worker_id)
        return worker_id in self._inflight

    def _retry_or_fail(self, fl: _InFlight, now: float, what: str) -> int:
        """The batch `fl` failed (`what` says how): re-queue each image that has attempts and
        deadline left, answer the others with an error. Returns how many were re-queued."""
        requeued = 0
        for job in fl.jobs:
            req = job.request
            if self._gone(req):
                continue
            job.attempts += 1
            rid = req.result.request_id
            if job.attempts >= self.config.max_batch_attempts:
                self._finish(req, Outcome.FAILED, WorkerFailedError(
                    f"{what}; request {rid} was in {job.attempts} batches that failed and is "
                    "not retried again"))
            elif cannot_meet(req.result.deadline_s, now, self.table, self.drop_overhead_s,
                             min_latency_s=self.min_latency_s,
                             latency_scale=self.drop_scale):
                self._finish(req, Outcome.FAILED, WorkerFailedError(
                    f"{what} while serving request {rid}, and too little of its deadline is "
                    "left to retry it"))
            else:
                self._queue.push(req.result.deadline_s, job)
                requeued += 1
        self.stats.requeued += requeued
        return requeued

    # ------------------------------------------------------------------ batch watchdog
    def _arm_watchdog(self, at: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog_at = at
        self._watchdog = self.clock.call_at(at, self._on_watchdog)

    def _on_watchdog(self) -> None:
        now = max(self.clock.now(), self._watchdog_at)  # a loop timer may fire a bit early
        self._watchdog, self._watchdog_at = None, math.inf
        for wid, fl in list(self._inflight.items()):
            if fl.hang_at_s <= now:
                self._hung(wid, fl, now)
        nxt = min((fl.hang_at_s for fl in self._inflight.values()), default=math.inf)
        if nxt < math.inf:
            self._arm_watchdog(nxt)
        self._dispatch()

    def _hung(self, wid: int, fl: _InFlight, now: float) -> None:
        """`wid` overran its batch far past the plan: take the batch back, kill the worker
        (the pool reports it lost and restarts it) and never use it until it is ready again."""
        del self._inflight[wid]
        self._ready.discard(wid)
        if wid in self._idle:
            self._idle.remove(wid)
        self._worker_subnet.pop(wid, None)
        self.stats.hung += 1
        ran = now - fl.dispatched_s
        what = (f"worker {wid} hung: batch {fl.batch_id} ({len(fl.jobs)} images, subnet "
                f"{fl.subnet}) ran {ran:.2f} s against {fl.planned_s * 1e3:.1f} ms planned")
        requeued = self._retry_or_fail(fl, now, what)
        log.error("%s; re-queued %d images, killing the worker", what, requeued)
        try:
            self.pool.kill(wid)
        except Exception as e:  # noqa: BLE001 (already gone, or a pool that cannot kill)
            log.error("could not kill hung worker %d: %s", wid, e)

    def _take_inflight(self, worker_id: int, batch_id: int) -> _InFlight | None:
        fl = self._inflight.get(worker_id)
        if fl is None or fl.batch_id != batch_id:
            log.warning("stale result from worker %d for batch %d ignored", worker_id, batch_id)
            return None
        del self._inflight[worker_id]
        return fl

    def _worker_free(self, worker_id: int) -> None:
        if worker_id in self._ready and worker_id not in self._idle:
            self._idle.append(worker_id)
        self._dispatch()
