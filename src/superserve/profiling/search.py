"""Pareto search over a supernet's subnets (pure: no torch).

An evolutionary search (in the spirit of OFA's) over an abstract `evaluate(spec) -> (score,
cost)`: it keeps the non-dominated set of everything evaluated (higher score, lower cost) and
breeds the next generation from it by mutation and crossover, so evaluations concentrate near
the frontier. `score` should be a fine-grained accuracy measure (the mean probability of the
true class separates subnets that top-1 on 500 images cannot); `cost` a latency estimate.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from superserve.errors import ConfigError

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Hashable)

__all__ = ["Candidate", "SearchConfig", "evolve", "pareto_front", "thin_front"]


class Space(Protocol[S]):
    def sample(self, rng: random.Random) -> S: ...
    def mutate(self, spec: S, rng: random.Random, prob: float) -> S: ...
    def crossover(self, a: S, b: S, rng: random.Random) -> S: ...
    def largest(self) -> S: ...
    def smallest(self) -> S: ...


@dataclass(frozen=True)
class SearchConfig:
    population: int = 80  # random specs in the first generation
    generations: int = 4
    children: int = 50  # new specs per generation
    mutate_prob: float = 0.15  # low: children stay near the frontier they came from
    crossover_frac: float = 0.3  # share of children made by crossover
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("population", "generations", "children"):
            if getattr(self, name) < 0:
                raise ConfigError(f"SearchConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("mutate_prob", "crossover_frac"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"SearchConfig.{name} must be in [0, 1], "
                                 f"got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Candidate:
    spec: Hashable
    score: float  # higher is better
    cost: float  # lower is better


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """Non-dominated candidates, sorted by cost (and so by rising score)."""
    out: list[Candidate] = []
    best = float("-inf")
    for c in sorted(cands, key=lambda c: (c.cost, -c.score)):
        if c.score > best:
            out.append(c)
            best = c.score
    return out


def thin_front(front: Sequence[Candidate], n: int) -> list[Candidate]:
    """Exactly min(n, len(front)) distinct frontier points spread evenly in cost (log scale
    keeps the cheap end dense enough), always keeping both ends. Each of the n evenly spaced
    targets takes the nearest point not yet taken, so a front whose points cluster (a few
    cheap, many dear) still yields n subnets rather than n targets collapsing onto the same
    few."""
    if len(front) <= n:
        return list(front)
    if n <= 0:
        return []
    import math

    pts = sorted(front, key=lambda c: c.cost)
    if n == 1:
        return [pts[-1]]
    lo, hi = math.log(pts[0].cost), math.log(pts[-1].cost)
    targets = [lo + (hi - lo) * k / (n - 1) for k in range(n)]
    order = [0, n - 1] + list(range(1, n - 1))  # the ends first: they are always kept
    free = list(range(len(pts)))
    taken: list[int] = []
    for k in order:
        j = min(free, key=lambda i: (abs(math.log(pts[i].cost) - targets[k]), i))
        free.remove(j)
        taken.append(j)
    return [pts[i] for i in sorted(taken)]


def evolve(space: Space, evaluate: Callable[[Hashable], tuple[float, float]],
           cfg: SearchConfig = SearchConfig(),
           progress: Callable[[int, int], None] | None = None,
           may_continue: Callable[[int], bool] | None = None) -> list[Candidate]:
    """All evaluated candidates (the caller takes the front). Each spec is evaluated once.
    `may_continue(evaluated)`: asked before every evaluation after the two ends; False ends
    the search there (a time budget: profiling/budget.py)."""
    rng = random.Random(cfg.seed)
    seen: dict[Hashable, Candidate] = {}
    total = cfg.population + 2 + cfg.generations * cfg.children
    done = 0
    stopped = False

    def ev(spec: Hashable) -> None:
        nonlocal done, stopped
        if spec in seen or stopped:
            return
        if done >= 2 and may_continue is not None and not may_continue(done):
            stopped = True
            log.info("search stopped by its budget after %d candidates", done)
            if progress:
                progress(done, done)
            return
        score, cost = evaluate(spec)
        seen[spec] = Candidate(spec, score, cost)
        done += 1
        if progress:
            progress(done, total)

    for spec in [space.largest(), space.smallest()] + [space.sample(rng)
                                                        for _ in range(cfg.population)]:
        ev(spec)
    for gen in range(cfg.generations):
        if stopped:
            break
        front = pareto_front(list(seen.values()))
        parents = [c.spec for c in front]
        made, tries = 0, 0
        while made < cfg.children and tries < cfg.children * 20 and not stopped:
            tries += 1
            if len(parents) > 1 and rng.random() < cfg.crossover_frac:
                a, b = rng.sample(parents, 2)
                child = space.mutate(space.crossover(a, b, rng), rng, cfg.mutate_prob / 2)
            else:
                child = space.mutate(rng.choice(parents), rng, cfg.mutate_prob)
            if child not in seen:
                ev(child)
                made += 1
        log.info("generation %d: %d evaluated, front %d", gen + 1, len(seen),
                 len(pareto_front(list(seen.values()))))
    return list(seen.values())
