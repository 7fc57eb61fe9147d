"""Seeded arrival-time generators. Each returns sorted arrival times in seconds from 0.

- poisson: exponential inter-arrivals at `rate`.
- bursty (the paper, after InferLine): a deterministic base stream at `base` q/s plus a gamma
  stream at `variant` q/s whose inter-arrivals have shape 1/cv2 (so CV^2 = cv2).
- timevarying: gamma inter-arrivals with CV^2 = cv2 at an instantaneous rate that moves from
  `start` to `end` at `accel` q/s^2, then holds.
- maf: Azure-Functions-like: `functions` functions with heavy-tailed (Zipf) popularity, each
  with a diurnal shape and bursty per-minute counts; 1,440 minutes compressed into `duration`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bursty", "from_minute_counts", "maf", "poisson", "timevarying"]


def poisson(rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    n = rng.poisson(rate * duration)
    return np.sort(rng.uniform(0.0, duration, n))


def _gamma_stream(rate: float, cv2: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    if rate <= 0:
        return np.empty(0)
    shape, scale = 1.0 / cv2, cv2 / rate  # mean = 1/rate, CV^2 = cv2
    n = int(rate * duration * 1.2 + 50 + 10 * np.sqrt(rate * duration * cv2))
    out = []
    t0 = rng.uniform(0, 1.0 / rate)
    while True:
        t = t0 + np.cumsum(rng.gamma(shape, scale, n))
        out.append(t)
        if t[-1] >= duration:
            break
        t0 = t[-1]
    t = np.concatenate(out)
    return t[t < duration]


def bursty(base: float, variant: float, cv2: float, duration: float,
           rng: np.random.Generator) -> np.ndarray:
    det = np.arange(0.0, duration, 1.0 / base) + rng.uniform(0, 1.0 / base) if base > 0 \
        else np.empty(0)
    return np.sort(np.concatenate([det[det < duration], _gamma_stream(variant, cv2, duration, rng)]))


def timevarying(start: float, end: float, accel: float, cv2: float, duration: float,
                rng: np.random.Generator) -> np.ndarray:
    """Rate(t) = start + sign * accel * t until it reaches `end`. A gamma renewal process in
    'operational time' Lambda(t) = integral of rate: unit-mean gamma steps mapped back."""
    sign = 1.0 if end >= start else -1.0
    t_ramp = abs(end - start) / accel if accel > 0 else 0.0
    # Lambda(t) piecewise: quadratic during the ramp, linear after
    lam_ramp = start * t_ramp + 0.5 * sign * accel * t_ramp ** 2
    total = lam_ramp + end * max(0.0, duration - t_ramp) if duration > t_ramp else \
        start * duration + 0.5 * sign * accel * duration ** 2
    shape, scale = 1.0 / cv2, cv2
    n = int(total * 1.2 + 50 + 10 * np.sqrt(total * cv2))
    ops = np.cumsum(rng.gamma(shape, scale, n)) + rng.uniform(0, 1)
    while ops[-1] < total:
        ops = np.concatenate([ops, ops[-1] + np.cumsum(rng.gamma(shape, scale, n))])
    ops = ops[ops < total]
    t = np.empty_like(ops)
    ramp = ops < lam_ramp
    a = 0.5 * sign * accel
    if accel > 0 and t_ramp > 0:  # solve a t^2 + start t - L = 0
        L = ops[ramp]
        t[ramp] = (-start + np.sqrt(np.maximum(start ** 2 + 4 * a * L, 0))) / (2 * a) \
            if a != 0 else L / start
    else:
        ramp[:] = False
    t[~ramp] = t_ramp + (ops[~ramp] - lam_ramp) / end if end > 0 else duration
    return np.sort(t[t < duration])


def from_minute_counts(counts: np.ndarray, duration: float, mean_rate: float | None,
                       rng: np.random.Generator) -> np.ndarray:
    """Arrivals from per-minute counts compressed into `duration` seconds. With `mean_rate`
    the counts are rescaled (and Poisson-resampled) to that mean; arrivals are uniform within
    their bin."""
    counts = np.asarray(counts, dtype=float)
    bin_s = duration / len(counts)
    if mean_rate is not None:
        total = counts.sum()
        expect = counts * (mean_rate * duration / total) if total > 0 else counts
        n = rng.poisson(expect)
    else:
        n = counts.astype(int)
    starts = np.repeat(np.arange(len(counts)) * bin_s, n)
    return np.sort(starts + rng.uniform(0, bin_s, len(starts)))


def maf(mean: float, duration: float, functions: int, rng: np.random.Generator) -> np.ndarray:
    """Per-minute counts of `functions` functions summed, then compressed into `duration`.

    Calibrated to what Shahrad et al. (ATC'20, "Serverless in the Wild") report of the Azure
    Functions 2019 trace: popularity is heavy-tailed (a few functions carry most invocations);
    popular functions are steady while rare ones are bursty; the aggregate follows one daily
    cycle (people's day) with bursts on top. Per function: a Zipf(1.1) share, a diurnal
    sinusoid whose phase is the day's plus a small per-function offset, lognormal per-minute
    noise whose sigma grows from 0.15 (most popular) to 1.0 (rarest), and 0.5% storm minutes
    at 2-4x. The aggregate per-minute count then has a CV of about 0.3-0.4 and a peak under
    2.5x its mean (tests/test_traces.py checks this); an
    earlier version with sigma up to 1.2 on every function and 3-10x storms put single
    compressed minutes at 10x the daily mean, which the real aggregate never shows.
    """
    minutes = 1440
    order = np.arange(1, functions + 1)
    share = 1.0 / order ** 1.1  # Zipf-like popularity, most popular first
    sigma = 0.15 + 0.85 * (order - 1) / max(1, functions - 1)  # popular functions are steady
    t = np.arange(minutes) / minutes
    counts = np.zeros(minutes)
    day = rng.uniform(0, 1)
    for f in range(functions):
        phase = day + rng.normal(0, 0.08)
        diurnal = 1.0 + 0.5 * np.sin(2 * np.pi * (t - phase))  # daily cycle
        noise = rng.lognormal(-sigma[f] ** 2 / 2, sigma[f], minutes)  # mean 1
        storms = np.where(rng.random(minutes) < 0.005, rng.uniform(2, 4, minutes), 1.0)
        counts += share[f] * diurnal * noise * storms
    return from_minute_counts(counts, duration, mean, rng)
