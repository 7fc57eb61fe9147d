"""The scheduling policies: SlackFit, MaxBatch, MaxAcc and the Clipper+ / INFaaS baselines.

All are pure: `decide(view, now_s) -> Plan | None` reads only the view, the time and the
ProfileTable given at construction. Offline work (SlackFit's buckets, per-batch-size lookup
tables) happens once in __init__; a decision is O(1) or O(log n), never O(queue length).

Shared conventions (docs/scheduling.md lists every edge case):
- slack = (head deadline - now - view.overhead_s) / view.latency_scale: the time the batch may
  take, in the table's units (base.table_slack_s; the router's calibration sets both).
- Plans use the table's profiled batch sizes; the caller takes a shorter queue whole.
- "Covering" size: the first profiled batch size >= the queue length. Policies never plan a
  batch larger than that, since the extra slots would be empty.
- Slack below every choice: plan the fastest subnet at batch 1. The shared drop rule
  (base.cannot_meet) has removed requests that cannot make it even so, so this happens only
  inside the overhead margin.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from superserve.errors import ConfigError
from superserve.profiling.table import ProfileTable
from superserve.scheduling.base import Plan, QueueView, table_slack_s
from superserve.scheduling.bursts import BURST_FRACTIONS

__all__ = ["DEFAULT_BUCKETS", "SLACKFIT_RULES", "Clipper", "Infaas", "Lookup", "MaxAcc",
           "MaxBatch", "SlackFit"]

DEFAULT_BUCKETS = 64  # SlackFit latency buckets (docs/scheduling.md: why 64)
# which rule made a SlackFit plan (Plan.rule), from the first that applies:
RULE_FRONT = "front"  # the front-end rule: the fastest subnet while entries come late
RULE_FASTEST = "fastest"  # no choice fits the slack: the fastest subnet at batch 1
RULE_LIGHT = "light"  # a queue shorter than the bucket's batch, served by a more accurate one
RULE_RATE = "rate"  # the rate guard swapped the bucket's subnet for one that keeps up
RULE_GUARD = "guard"  # the bucket of the slack as the burst guard capped it
RULE_BUCKET = "bucket"  # the paper's rule: the bucket of the head's own slack
SLACKFIT_RULES = (RULE_FRONT, RULE_FASTEST, RULE_LIGHT, RULE_RATE, RULE_GUARD, RULE_BUCKET)
EARLY_DROP_SHARE = 4  # SlackFit early drop: a head needs slack for >= queue / 4 (see SlackFit)
# the rate guard's backlog bound (SlackFit._need_qps) counts the queue as arrived within the
# head's age, but over no less than this share of the SLO
BACKLOG_WINDOW_FLOOR = 0.25


class Lookup:
    """Per batch size: subnets sorted by latency with the running most-accurate one, so
    "the most accurate subnet that runs batch b within s seconds" is one bisect, even when
    the table violates P2."""

    def __init__(self, table: ProfileTable) -> None:
        self.table = table
        self.lat: list[list[float]] = []  # per batch-size column: sorted latencies
        self.best: list[list[int]] = []  # per column: most accurate subnet among the first k+1
        self.order: list[list[int]] = []  # per column: subnets in that latency order
        for j in range(len(table.batch_sizes)):
            order = sorted(range(len(table)), key=lambda i: table.lat_s[i][j])
            self.order.append(order)
            lat, best, b = [], [], -1
            for i in order:
                if b < 0 or table.acc[i] > table.acc[b]:
                    b = i
                lat.append(table.lat_s[i][j])
                best.append(b)
            self.lat.append(lat)
            self.best.append(best)
        self.fastest = min(range(len(table)), key=lambda i: table.lat_s[i][0])

    def cover(self, qlen: int) -> int:
        """Column index of the first profiled batch size >= qlen (the largest if none)."""
        return min(bisect.bisect_left(self.table.batch_sizes, qlen), len(self.table.batch_sizes) - 1)

    def most_accurate(self, j: int, slack_s: float) -> int:
        """Most accurate subnet whose latency at column j fits the slack; -1 if none."""
        k = bisect.bisect_right(self.lat[j], slack_s) - 1
        return self.best[j][k] if k >= 0 else -1

    def most_accurate_of(self, j: int, slack_s: float, ok: list[bool]) -> int:
        """Most accurate subnet with ok[subnet] whose latency at column j fits the slack;
        -1 if none. O(subnets): for the rate guard only, when it binds."""
        k = bisect.bisect_right(self.lat[j], slack_s)
        acc, out = self.table.acc, -1
        for i in self.order[j][:k]:
            if ok[i] and (out < 0 or acc[i] > acc[out]):
                out = i
        return out

    def largest_batch(self, subnet: int, slack_s: float, j_max: int) -> int:
        """Largest column <= j_max at which `subnet` fits the slack; -1 if none."""
        row = self.table.lat_s[subnet]
        for j in range(j_max, -1, -1):
            if row[j] <= slack_s:
                return j
        return -1


class SlackFit:
    """The paper's SlackFit (section 4.2).

    Offline: split [latency(fastest subnet, batch 1), latency(slowest subnet, max batch)] into
    `buckets` equal intervals; each keeps, among the (subnet, batch) choices whose latency falls
    inside it, the one with the largest batch (ties: higher accuracy, then lower latency).
    Online: the non-empty bucket closest to but below the slack gives the plan: the highest
    bucket whose choice's latency fits the slack. Low slack -> fast subnets with big batches;
    high slack -> accurate subnets.

    A queue shorter than the bucket's batch (light load) would waste the bucket's throughput
    on empty slots: then the most accurate subnet that serves the whole queue within the slack
    is chosen instead (never less accurate than the bucket's choice).

    `early_drop` (not in the paper; Nexus's early drop in SlackFit's terms): a head whose
    slack fits only batches far smaller than the queue behind it is dropped instead of served.
    Without it, one late batch can start a spiral: heads with little slack get tiny batches,
    tiny batches fall behind the arrivals, and the queue behind them loses its slack too
    (measured live: batch sizes fell from ~30 to ~2 for up to half a second, hundreds of SLO
    misses each time; in the simulator the paper's rule fell from 0.99 to 0.59 attainment
    between 2,900 and 3,200 req/s). The head is kept when its slack fits, on the fastest
    subnet, the largest profiled batch <= min(queue, max batch) / EARLY_DROP_SHARE; so short
    queues (light load) keep the plain drop rule. The queue, not the rate estimate, is the
    signal: it reacts within one batch, the rate's moving average within a second.

    `front_end_share` (not in the paper): when the newest request reached the router with
    less than this share of its SLO left (`QueueView.entry_share`), a front end behind
    on its core is handing requests over late, and those still coming will have as little:
    only short batches answer them, and a batch planned for the head's slack holds them past
    their deadlines. SlackFit then plans like the fastest fixed subnet (the largest batch of
    the fastest subnet that fits the head's slack) until the entries catch up. Simulated (the
    Azure code trace at 1,000 req/s, a FIFO front end of 0.3 ms a request ahead of the
    router, the drifting x1.3 world, calibrated): requests that entered with 5-20 ms left met
    their SLO 36-65% of the time under SlackFit and 87-100% under clipper:0; with the rule,
    benchmarks/frontend_sim.py has the figures.
    """

    name = "slackfit"

    def __init__(self, table: ProfileTable, buckets: int = DEFAULT_BUCKETS,
                 cap_s: float | None = None, early_drop: bool = False,
                 burst_guard_slo_s: float | None = None, workers: int = 1,
                 rate_headroom: float | None = None,
                 front_end_share: float | None = None) -> None:
        if buckets < 1:
            raise ConfigError(f"slackfit buckets must be >= 1, got {buckets}")
        if cap_s is not None and not cap_s > 0:
            raise ConfigError(f"slackfit cap_s must be > 0, got {cap_s}")
        if burst_guard_slo_s is not None and not burst_guard_slo_s > 0:
            raise ConfigError(f"slackfit burst_guard_slo_s must be > 0, got {burst_guard_slo_s}")
        if workers < 1:
            raise ConfigError(f"slackfit workers must be >= 1, got {workers}")
        if rate_headroom is not None and not rate_headroom > 0:
            raise ConfigError(f"slackfit rate_headroom must be > 0, got {rate_headroom}")
        if front_end_share is not None and not 0 <= front_end_share < 1:
            raise ConfigError(f"slackfit front_end_share must be in [0, 1), got "
                              f"{front_end_share}")
        self.table, self.buckets = table, buckets
        self.rate_headroom = rate_headroom
        # below this share of its SLO left at entry, the newest request says the front end
        # is behind: SlackFit plans like the fastest fixed subnet (None or 0: never)
        self.front_end_share = front_end_share
        self._col = {b: j for j, b in enumerate(table.batch_sizes)}
        self._rate_key: tuple | None = None
        self._thr_key: tuple[int | None, ...] | None = None
        self._thr: tuple[list[float], list[float]] | None = None
        self._thr_min = 0.0  # min(self._thr[0]): the slowest subnet's (rate_guard_binds)
        self._lat_np: np.ndarray | None = None  # the table's latencies, for _throughputs
        self._sizes_np: np.ndarray | None = None
        self._rate_mask: list[bool] | None = None
        # optional (not in the paper): never plan a batch longer than cap_s, so a burst that
        # arrives just after a batch starts still finds a worker within cap_s
        self.cap_s = cap_s
        # the adaptive guard (not in the paper; the default): the cap follows the bursts
        # the caller measures, see `guard_s`. The caller tracks images per this window.
        self.burst_window_s = burst_guard_slo_s
        self.burst_fractions = BURST_FRACTIONS  # ... and per these shares of it
        self.workers = workers
        self.lookup = Lookup(table)
        self.min_latency_s = table.fastest_s
        self.early_drop = early_drop
        # per profiled batch size: the fastest subnet's latency at it
        self._fastest_col = [min(row[j] for row in table.lat_s)
                             for j in range(len(table.batch_sizes))]
        lo = table.fastest_s
        hi = max(max(r) for r in table.lat_s)
        self._lo = lo
        self._width = (hi - lo) / buckets if hi > lo else 1.0
        best: list[tuple | None] = [None] * buckets
        for i, row in enumerate(table.lat_s):
            for j, lat in enumerate(row):
                k = min(buckets - 1, int((lat - lo) / self._width))
                key = (table.batch_sizes[j], table.acc[i], -lat)
                if best[k] is None or key > best[k][0]:
                    best[k] = (key, i, table.batch_sizes[j], lat)
        # per bucket: its own choice, or None when empty
        self.bucket_choices: list[tuple[int, int, float] | None] = [
            None if b is None else (b[1], b[2], b[3]) for b in best]
        # below[k]: the highest non-empty bucket <= k (-1 if none), for O(1) lookups
        self._below: list[int] = []
        last = -1
        for k, b in enumerate(self.bucket_choices):
            if b is not None:
                last = k
            self._below.append(last)

    def _early_drop_col(self, queue_length: int) -> int:
        """Column of the batch a head must fit to be kept (0: the plain rule's)."""
        if not self.early_drop:
            return 0
        want = min(queue_length, self.table.max_batch) / EARLY_DROP_SHARE
        return max(bisect.bisect_right(self.table.batch_sizes, want) - 1, 0)

    def early_drop_batch(self, queue_length: int) -> int:
        """The batch size a head must fit on the fastest subnet to be kept for a queue of
        `queue_length` (`drop_slack_s`): the caller's per-batch overhead is that batch's."""
        return self.table.batch_sizes[self._early_drop_col(queue_length)]

    def drop_slack_s(self, queue_length: int, arrival_rate_qps: float) -> float:
        """The least slack a head needs to be kept (base.drop_slack_s)."""
        j = self._early_drop_col(queue_length)
        if j <= 0:
            return self.min_latency_s
        return max(self.min_latency_s, self._fastest_col[j])

    def _clear_s(self, images: float, latency_scale: float, overhead_s: float) -> float:
        """Real seconds for the workers to clear `images` on the fastest subnet, largest
        batches first, each worker its share."""
        sizes, col = self.table.batch_sizes, self._fastest_col
        per_worker = -(-math.ceil(images) // self.workers)
        full, rest = divmod(per_worker, sizes[-1])
        clear_table = full * col[-1]
        batches = full
        if rest:
            clear_table += col[self.lookup.cover(rest)]
            batches += 1
        return clear_table * latency_scale + batches * overhead_s

    def guard_s(self, burst_images: float, latency_scale: float = 1.0,
                overhead_s: float = 0.0, slo_s: float | None = None,
                peaks: tuple[float, ...] = (), queued: float = 0.0) -> float:
        """The adaptive blocking guard (real seconds): the longest batch that still leaves
        time to clear a burst arriving just after it starts on the fastest choices (the
        workers sharing it, largest batches first), clear = latency_scale x profiled time +
        overhead per batch. `peaks`: the most images seen within each of `burst_fractions`
        of the window; n images within w seconds are due by w + SLO, so the guard is the
        least of w + SLO - clear(n) over the windows. Without them, `burst_images` within
        the window is taken to arrive at once: SLO - clear(burst_images).
        Never below the fastest subnet's largest batch, so throughput is never capped
        below the table's best. Smooth traffic (a few images per window) leaves it near
        the SLO; a trace whose bursts pile hundreds of images into a few milliseconds pulls
        it down to that floor, where SlackFit plans like the fastest fixed subnet. `slo_s`:
        the SLO the burst must be cleared within (the head request's own; default: the
        window). `queued`: images already waiting beyond this batch, cleared before any
        burst that follows (EDF), so added to every burst."""
        window = self.burst_window_s
        assert window is not None
        slo = window if slo_s is None else slo_s
        if peaks:
            guard = min(f * window + slo - self._clear_s(queued + n, latency_scale, overhead_s)
                        for f, n in zip(self.burst_fractions, peaks))
        else:
            guard = slo - self._clear_s(queued + burst_images, latency_scale, overhead_s)
        floor = self._fastest_col[-1] * latency_scale + overhead_s
        return max(floor, guard)

    def _slo_s(self, view: QueueView) -> float | None:
        """The SLO the rate guard plans for: the head's own, else the burst guard's window."""
        return view.head_slo_s if view.head_slo_s is not None else self.burst_window_s

    def _throughputs(self, view: QueueView) -> tuple[list[float], list[float]]:
        """Per subnet: its sustained throughput per worker (images / s) at the view's
        calibrated cost, at batch sizes that meet the SLO in steady state, and at any size
        (`rate_ok`). Cached: recomputed only when the cost or the SLO moves by about 3%."""
        cyc = view.overhead_s if view.cycle_overhead_s is None else view.cycle_overhead_s
        scale, reserve = view.latency_scale, view.overhead_s
        slo = self._slo_s(view)
        # ~3% steps (0.1 ms for the overheads and the SLO): recomputing on 1% steps cost
        # 1.4% of the router's time at 2,000 req/s
        key = (round(math.log(max(scale, 1e-9)) * 33), round(cyc * 1e4), round(reserve * 1e4),
               None if slo is None else round(slo * 1e4))
        if key == self._thr_key and self._thr is not None:
            return self._thr
        # all subnets x batch sizes at once (the loop over 37 x 6 cost ~250 us a recompute
        # on a slow day, and a noisy machine moves the cost past 3% every few batches)
        if self._lat_np is None:
            self._lat_np = np.asarray(self.table.lat_s, dtype=float)
            self._sizes_np = np.asarray(self.table.batch_sizes, dtype=float)
        lat = self._lat_np
        scaled = scale * lat
        typ = scaled + cyc
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.where(typ > 0, self._sizes_np / typ, math.inf)
        thr_any_np = per.max(axis=1)
        ok = per if slo is None else np.where(typ + scaled + reserve <= slo, per, 0.0)
        # a cost <= 0 anywhere in a row (a degenerate calibration) counts as unbounded
        thr_np = np.where(np.isinf(thr_any_np), math.inf, ok.max(axis=1))
        thr, thr_any = thr_np.tolist(), thr_any_np.tolist()
        self._thr_key, self._thr, self._thr_min = key, (thr, thr_any), min(thr)
        return self._thr

    def _need_qps(self, view: QueueView, headroom: float, now_s: float | None = None) -> float:
        """The throughput per worker (images / s) the rate guard asks of a subnet: the
        measured arrival rate x headroom x the miss feedback's boost, or the queue's own
        bound on the recent rate when that is more. The rate is a moving average over about a
        second and lags a burst's onset by hundreds of ms; every queued image arrived after
        the head did (EDF, within one SLO), so the images behind the head's request (length -
        `head_images`) / the head's age (`now_s`) is the rate since then, which shows an onset
        within one batch. The age is taken as at least BACKLOG_WINDOW_FLOOR x the SLO (so
        that a few requests that came together do not read as a flood) and at most the SLO;
        without `now_s`, length / SLO. It takes no
        headroom or boost: in steady traffic it stays below the rate's own bar (a queue of
        about one batch), and only a queue longer than the measured rate explains moves it.

        Over the whole SLO (until 2026-12-01) the bound moved only once the queue held a
        SLO's worth of the new rate: a step from 50 to 2,000 req/s (a paced warm-up, then the
        bursty trace) let accurate subnets take 20-35 ms batches into the onset. Simulated
        (that step, the shipped table x1.45, 10% jitter, 4 ms reserve, mean of 6 traces):
        misses in the first second at 500 / 1,000 / 1,500 / 2,000 / 3,000 req/s 1 / 14 / 22 /
        51 / 1,142 -> 0 / 0 / 0 / 1 / 436, accuracy 97.78 / 97.53 / 97.36 / 96.75 / 95.52% ->
        97.78 / 97.54 / 97.41 / 97.00 / 95.54%; benchmarks/transients_sim.py (16 seeds) and
        calibration_sim.py within 0.001 of attainment and 0.08 points of accuracy either way.
        A floor of 0.5 left 5-50 of those misses; 0.1 cost up to 0.2 points of accuracy."""
        slo = self._slo_s(view)
        if not slo:
            backlog = 0.0
        elif now_s is None or view.head_slo_s is None:
            backlog = view.length / slo
        else:  # the head's request came first: the images behind it came within its age
            # in the queue (since its first byte when the caller does not say)
            queued = view.head_queued_s
            age = now_s - (view.head_deadline_s - view.head_slo_s if queued is None else queued)
            behind = max(view.length - max(view.head_images, 1), 0)
            backlog = behind / min(slo, max(age, BACKLOG_WINDOW_FLOOR * slo))
        need = headroom * view.rate_boost * view.arrival_rate_qps
        return max(need, backlog) / self.workers

    def rate_guard_binds(self, view: QueueView, factor: float = 1.0,
                         now_s: float | None = None) -> bool:
        """Whether the rate guard, its headroom times `factor` (and the view's boost), keeps
        out any subnet at the view's demand (`_need_qps`): a raise of the miss feedback's boost
        changes a plan only then (at 50 req/s every subnet keeps up even at x4, and misses
        there are no throughput problem)."""
        h = self.rate_headroom
        if h is None:
            return False
        need = self._need_qps(view, h * factor, now_s)
        if need <= 0:
            return False
        self._throughputs(view)  # refreshes the cached minimum when the cost moved
        return self._thr_min < need

    def rate_ok(self, view: QueueView, now_s: float | None = None) -> list[bool] | None:
        """Per subnet: can it sustain rate_headroom x the arrival rate per worker (or the
        queue's own bound on the rate, `_need_qps`) at the view's calibrated cost, at a batch
        size that also meets the SLO in that steady state? None when the guard is off or every
        subnet can. Cached: the inputs move slowly, so it is recomputed only when one moves by
        about 3%.

        A batch of b costs typ(b) = latency_scale x profiled(b) + cycle overhead on average
        and is planned at plan(b) = latency_scale x profiled(b) + overhead_s (the reserve).
        In the steady state its head arrived about one cycle before it starts, so b counts
        only if typ(b) + plan(b) <= SLO: the largest batches are worth their throughput
        only when the slack left after one cycle still fits them. Without that bound, a
        co-tenant that inflates the per-batch reserve (a CPU hog time-slicing the worker)
        left the guard crediting subnets with batch-32 throughput that SlackFit could never
        plan, and the worker ran saturated at batch ~10 of them."""
        h = self.rate_headroom
        if h is None:
            return None
        need = self._need_qps(view, h, now_s)
        if need <= 0:
            return None
        thr, thr_any = self._throughputs(view)
        # at 2,000 req/s the rate moves by 1% every few dozen arrivals: ~3% steps
        key = (round(math.log(need) * 33), self._thr_key)
        if key == self._rate_key:
            return self._rate_mask
        mask: list[bool] | None = [t >= need for t in thr]
        if all(mask):
            mask = None
        elif not any(mask):  # none keeps up: the one with the most throughput, at any size
            top = max(range(len(thr)), key=lambda i: (thr[i], thr_any[i]))
            mask = [i == top for i in range(len(thr))]
        self._rate_key, self._rate_mask = key, mask
        return mask

    def front_end_behind(self, entry_share: float | None) -> bool:
        """Whether the front-end rule binds for a newest request that reached the router with
        `entry_share` of its SLO left (None: unknown, taken as all of it)."""
        share = self.front_end_share
        return bool(share) and entry_share is not None and entry_share < share

    def decide(self, view: QueueView, now_s: float) -> Plan | None:
        cap = self.cap_s
        if self.burst_window_s is not None:
            # the guard bounds a batch's whole cost; the cap bounds the slack left once the
            # per-batch overhead is taken off (base.table_slack_s), so take it off here too
            # the queue beyond one largest batch stays queued whatever this batch takes
            queued = max(0, view.length - self.table.max_batch)
            guard = self.guard_s(view.burst_images, view.latency_scale, view.overhead_s,
                                 view.head_slo_s, view.burst_peaks, queued)
            guard -= view.overhead_s
            cap = guard if cap is None else min(cap, guard)
        slack = table_slack_s(view, now_s, cap)
        if self.front_end_behind(view.entry_share):
            # plan like the fastest fixed subnet until the front end catches up
            fast = self.lookup.fastest
            j = self.lookup.largest_batch(fast, slack, self.lookup.cover(view.length))
            return Plan(fast, self.table.batch_sizes[max(j, 0)], rule=RULE_FRONT)
        k = int((slack - self._lo) / self._width) if slack >= self._lo else -1
        k = self._below[min(k, self.buckets - 1)] if k >= 0 else -1
        choice = self.bucket_choices[k] if k >= 0 else None
        if choice is not None and choice[2] > slack:  # the slack's own bucket: its choice
            k = self._below[k - 1] if k > 0 else -1  # may not fit; take the one below
            choice = self.bucket_choices[k] if k >= 0 else None
        if choice is None:
            return Plan(self.lookup.fastest, 1, rule=RULE_FASTEST)
        subnet, batch, _ = choice
        # the burst guard bound the slack (the cap, not the head's deadline, sized the plan)
        rule = (RULE_GUARD if cap is not None
                and view.head_deadline_s - now_s - view.overhead_s > cap else RULE_BUCKET)
        ok = self.rate_ok(view, now_s) if self.rate_headroom is not None else None
        if ok is not None and not ok[subnet]:  # the rate guard: a subnet that keeps up ...
            alt = self.lookup.most_accurate_of(self._col[batch], slack, ok)
            if alt >= 0:  # ... within the slack; else SlackFit's own choice, which fits it
                subnet, rule = alt, RULE_RATE
                # ... at the largest batch it fits (the queue allowing): the guard swapped
                # for throughput, and the bucket's batch was sized for a slower subnet
                j = self.lookup.largest_batch(alt, slack, self.lookup.cover(view.length))
                batch = max(batch, self.table.batch_sizes[j])
        if view.length < batch:
            j = self.lookup.cover(view.length)
            better = (self.lookup.most_accurate(j, slack) if ok is None
                      else self.lookup.most_accurate_of(j, slack, ok))
            if better >= 0 and self.table.acc[better] > self.table.acc[subnet]:
                return Plan(better, self.table.batch_sizes[j], rule=RULE_LIGHT)
            return Plan(subnet, min(batch, self.table.batch_sizes[j]), rule=rule)
        return Plan(subnet, batch, rule=rule)


class MaxAcc:
    """Accuracy first (paper appendix A): the most accurate subnet that fits the slack at
    batch 1, then the largest batch (up to the covering size) at which it still fits."""

    name = "maxacc"

    def __init__(self, table: ProfileTable) -> None:
        self.table = table
        self.lookup = Lookup(table)
        self.min_latency_s = table.fastest_s

    def decide(self, view: QueueView, now_s: float) -> Plan | None:
        slack = table_slack_s(view, now_s)
        i = self.lookup.most_accurate(0, slack)
        if i < 0:
            return Plan(self.lookup.fastest, 1)
        j = self.lookup.largest_batch(i, slack, self.lookup.cover(view.length))
        return Plan(i, self.table.batch_sizes[max(j, 0)])


class MaxBatch:
    """Batch first (paper appendix A): the largest batch (up to the covering size) that some
    subnet serves within the slack, then the most accurate subnet at that batch. (On a table
    that satisfies P2 "some subnet" is the fastest one; looking at every subnet's latency at
    each batch size keeps the rule right when the profile violates P2.)"""

    name = "maxbatch"

    def __init__(self, table: ProfileTable) -> None:
        self.table = table
        self.lookup = Lookup(table)
        self.min_latency_s = table.fastest_s

    def decide(self, view: QueueView, now_s: float) -> Plan | None:
        slack = table_slack_s(view, now_s)
        lk = self.lookup
        j = lk.cover(view.length)
        while j >= 0 and lk.lat[j][0] > slack:  # lat[j][0]: the fastest at batch column j
            j -= 1
        if j < 0:
            return Plan(lk.fastest, 1)
        return Plan(lk.most_accurate(j, slack), self.table.batch_sizes[j])


class Clipper:
    """Clipper+: one fixed subnet; the largest batch that fits the slack (at least 1)."""

    def __init__(self, table: ProfileTable, subnet: int) -> None:
        table.subnet_by_id(subnet)  # raises TableError for a bad id
        self.table, self.subnet = table, subnet
        self.served_subnets = (subnet,)  # what admission may count on (runtime/router.py)
        self.name = f"clipper:{subnet}"
        self.lookup = Lookup(table)
        self.min_latency_s = table.lat_s[subnet][0]

    def decide(self, view: QueueView, now_s: float) -> Plan | None:
        slack = table_slack_s(view, now_s)
        j = self.lookup.largest_batch(self.subnet, slack, self.lookup.cover(view.length))
        return Plan(self.subnet, self.table.batch_sizes[max(j, 0)])


class Infaas:
    """INFaaS-style model-variant selection over separately loaded models.

    Variants are the table's subnets, each a separate model. INFaaS minimises cost subject to
    the accuracy requirement: it serves the cheapest variant meeting `min_accuracy` (without
    a floor, the least accurate one), and when the measured load exceeds what that variant
    sustains within the SLO it moves to the cheapest variant that sustains it, if one
    still meets the floor. Every switch on a worker pays the variant's model-load time
    (from the table, or `load_ms`), during which that worker serves nothing. Batches take the
    largest size that fits the slack, as in Clipper+.
    """

    def __init__(self, table: ProfileTable, min_accuracy: float | None = None,
                 load_ms: float | None = None, slo_s: float = 0.05, workers: int = 1) -> None:
        self.table, self.lookup = table, Lookup(table)
        self.min_accuracy = min_accuracy
        self.load_ms = load_ms
        floor = -1.0 if min_accuracy is None else min_accuracy
        ok = [i for i in range(len(table)) if table.acc[i] >= floor]
        if not ok:
            raise ConfigError(f"infaas min_accuracy={min_accuracy} exceeds every subnet's accuracy "
                              f"(max {max(table.acc):.4f})")
        # cheapest = lowest batch-1 latency; capacity = best throughput within half the SLO
        self.variants = sorted(ok, key=lambda i: table.lat_s[i][0])
        self.capacity = {i: workers * max((b / lat for b, lat in zip(table.batch_sizes,
                                                                       table.lat_s[i])
                                           if lat <= slo_s / 2), default=1.0 / table.lat_s[i][0])
                         for i in self.variants}
        self.name = "infaas" if min_accuracy is None else f"infaas:min_accuracy={min_accuracy}"
        self.min_latency_s = min(table.lat_s[i][0] for i in self.variants)

    def variant_for(self, rate_qps: float) -> int:
        for i in self.variants:
            if self.capacity[i] >= rate_qps:
                return i
        return max(self.variants, key=lambda i: self.capacity[i])

    def decide(self, view: QueueView, now_s: float) -> Plan | None:
        i = self.variant_for(view.arrival_rate_qps)
        slack = table_slack_s(view, now_s)
        load_s = 0.0
        if view.worker_subnet != i:
            load_s = self.load_ms / 1e3 if self.load_ms is not None else self.table.load_s(i)
        j = self.lookup.largest_batch(i, slack - load_s / view.latency_scale,
                                       self.lookup.cover(view.length))
        return Plan(i, self.table.batch_sizes[max(j, 0)], load_s)
