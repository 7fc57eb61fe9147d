"""Resuming an interrupted profile, and estimating one before it starts.

The search is the long part of a profile (each candidate is calibrated and scored); its
results go to a journal beside the table (`T.json.partial.jsonl`), one JSON line per candidate
after a header that fingerprints what the results depend on (checkpoint, data, seed, search
calibration size, validation size). A rerun with the same fingerprint takes the scores from the
journal instead of recomputing them; the search is seeded and takes the same path. The journal
is removed once the table is written. A different fingerprint starts a fresh journal.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from superserve.profiling.scoring import Scores

__all__ = ["SearchJournal", "estimate_seconds", "journal_path"]

log = logging.getLogger(__name__)


def journal_path(table_path: str | Path) -> Path:
    p = Path(table_path)
    return p.with_name(p.name + ".partial.jsonl")


def _key(spec: Any) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)


class SearchJournal:
    """spec -> Scores of the search, appended as they are measured."""

    def __init__(self, path: str | Path, fingerprint: dict[str, Any]) -> None:
        self.path = Path(path)
        fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))  # tuples -> lists
        self.fingerprint = fingerprint
        self._done: dict[str, Scores] = {}
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            try:
                head = json.loads(lines[0]) if lines else None
                if head == {"fingerprint": fingerprint}:
                    for ln in lines[1:]:
                        rec = json.loads(ln)
                        self._done[rec["spec"]] = Scores(rec["score"], rec["top1"], rec["p_true"])
            except (ValueError, KeyError, TypeError):  # a torn last line: keep what parsed
                log.warning("journal %s: ignoring a malformed line", self.path)
            if self._done:
                log.info("resuming from %s: %d candidates already scored", self.path,
                         len(self._done))
                self.resumed = len(self._done)
                return
        self.resumed = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")

    def __len__(self) -> int:
        return len(self._done)

    def get(self, spec: Any) -> Scores | None:
        return self._done.get(_key(spec))

    def add(self, spec: Any, s: Scores) -> None:
        k = _key(spec)
        self._done[k] = s
        with self.path.open("a") as f:
            f.write(json.dumps({"spec": k, "score": s.score, "top1": s.top1,
                                "p_true": s.p_true}) + "\n")

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def estimate_seconds(net, cfg, n_train: int, n_val: int, n_test: int) -> dict[str, float]:
    """A rough total before the profile starts: time per image from one forward of the smallest
    and the largest subnet (batch statistics, no SubnetNorm needed), times the images each phase
    pushes through (search candidates are an upper bound: duplicates are not re-scored)."""
    from superserve.subnetact.norm import NormContext, NormMode

    spec_in = net.input_spec
    b = min(8, getattr(net, "eval_batch_size", 8))
    per_image = []
    with torch.inference_mode():
        for spec in (net.space.smallest(), net.space.largest()):
            r = getattr(spec, "r", None) or spec_in.height
            x = torch.rand(b, spec_in.channels, r, r)
            net.forward_ctx(x, spec, NormContext(NormMode.BATCH))  # warm-up
            t0 = time.perf_counter()
            net.forward_ctx(x, spec, NormContext(NormMode.BATCH))
            per_image.append((time.perf_counter() - t0) / b)
    t_img = sum(per_image) / len(per_image)
    s = cfg.search
    candidates = s.population + s.generations * s.children
    search = candidates * (min(cfg.search_calib_images, n_train) + n_val) * t_img
    final = (cfg.max_subnets + 2) * (min(cfg.calib_images, n_train) + n_val + n_test) * t_img
    timing = ((cfg.predictor_samples + 2) * 18 * t_img
              + (cfg.max_subnets + 2) * (cfg.repeats + cfg.warmup) * sum(cfg.batch_sizes) * t_img)
    return {"seconds_per_image": t_img, "search_s": search, "final_calibrate_and_score_s": final,
            "timing_s": timing, "total_s": search + final + timing,
            "search_candidates_at_most": float(candidates)}
