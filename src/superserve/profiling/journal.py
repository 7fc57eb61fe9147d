"""Resuming an interrupted profile (the estimate before it starts: profiling/budget.py).

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
from pathlib import Path
from typing import Any

from superserve.profiling.scoring import Scores

__all__ = ["SearchJournal", "journal_path"]

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
