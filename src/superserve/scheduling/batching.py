"""Batch wait: an idle worker holds its next batch a moment when more requests are due.

Every batch costs the server a fixed amount of CPU besides its images: the policy's decision,
stacking the images, a descriptor written to the worker and its result read back, a wake-up
of the worker process and of the router, and (on a core the two share) two context switches.
Under a light, fast workload (a small model, or a worker that finishes in microseconds) an
idle worker takes every request alone as it arrives, so that cost is paid once per request:
measured live on the 2-core machine with a no-compute worker at 2,000 req/s of JSON, server on
one core, batches held 1.6 requests on average and the server spent ~320 us of CPU per
request; holding the batch up to 2 ms after its head arrived gave ~4 requests per batch and
~230 us (docs/serving.md, "Batch wait").

The rule (`hold_until`) holds only when holding is likely to pay and cannot cost the SLO:
- the wait is bounded from the head's arrival (its first byte), not from now, by `wait_s`
  and by `slo_fraction` of the head's SLO, so no request waits more than that in all;
- the recent arrival rate must make at least `min_expected` more arrivals likely before the
  wait ends (a trickle of requests is never delayed for company that is not coming);
- a queue that already holds `max_images` images (default: the table's largest batch size)
  goes at once.
This is the same mechanism as Triton's dynamic batcher's `max_queue_delay_microseconds`, with
the rate and SLO conditions added, so that the default can be on. A worker that is busy never
waits here: under load batches form while it computes.

Pure: times are passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from superserve.errors import ConfigError

__all__ = ["BatchWaitConfig", "hold_until"]


@dataclass(frozen=True)
class BatchWaitConfig:
    wait_s: float = 0.002  # the longest a batch's head waits for company (0: never)
    slo_fraction: float = 0.05  # ... and at most this fraction of its SLO
    min_expected: float = 1.0  # hold only while this many more arrivals are expected in time
    max_images: int | None = None  # a queue this long goes at once (None: the largest batch)

    def __post_init__(self) -> None:
        if not (self.wait_s >= 0 and math.isfinite(self.wait_s)):
            raise ConfigError(f"batch wait must be >= 0 s and finite, got {self.wait_s!r}")
        if not 0 <= self.slo_fraction <= 1:
            raise ConfigError(f"batch wait slo_fraction must be in [0, 1], got "
                              f"{self.slo_fraction!r}")
        if not self.min_expected > 0:
            raise ConfigError(f"batch wait min_expected must be > 0, got {self.min_expected!r}")
        if self.max_images is not None and not (isinstance(self.max_images, int)
                                                and self.max_images >= 1):
            raise ConfigError(f"batch wait max_images must be an int >= 1, got "
                              f"{self.max_images!r}")


def hold_until(config: BatchWaitConfig, now: float, head_arrival_s: float, head_slo_s: float,
               queued: int, rate_qps: float, largest_batch: int) -> float | None:
    """When an idle worker should take its next batch: a time after `now` to hold until, or
    None to go now. `queued`: images waiting; `rate_qps`: the recent arrival rate;
    `largest_batch`: the table's largest batch size (`max_images` when that is None)."""
    if queued >= (config.max_images or largest_batch):
        return None
    until = head_arrival_s + min(config.wait_s, config.slo_fraction * head_slo_s)
    if until <= now:
        return None
    if rate_qps * (until - now) < config.min_expected:
        return None
    return until
