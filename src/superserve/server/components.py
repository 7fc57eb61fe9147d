"""Resolve what `superserve serve` serves: the ProfileTable, its SubnetNorm statistics file
and the policy, from a model name (or checkpoint) and optional table path."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from superserve.errors import ConfigError, TableError
from superserve.profiling.table import ProfileTable
from superserve.scheduling.base import Policy

log = logging.getLogger(__name__)

__all__ = ["load_policy", "norm_path_for", "resolve_table"]

FAMILIES = ("resnet", "vit")


def norm_path_for(table_path: Path) -> Path:
    """`{stem}.norm.pt` beside the table (assets/tables/resnet.json -> resnet.norm.pt)."""
    return table_path.with_name(f"{table_path.stem}.norm.pt")


def _default_table_path(family: str) -> Path:
    prof = importlib.import_module("superserve.profiling")
    ensure = getattr(prof, "ensure_table", None)
    if ensure is not None:  # may profile on first use when the shipped table is missing
        got = ensure(family)
        return Path(got[1] if isinstance(got, tuple) else got)  # (table, path) or path
    default = getattr(prof, "default_table_path", None)
    if default is not None:
        return Path(default(family))
    return Path(__file__).resolve().parents[1] / "assets" / "tables" / f"{family}.json"


def resolve_table(model: str, table: str | None, *,
                  check_family: bool = True) -> tuple[ProfileTable, Path, Path]:
    """`check_family=False` for workers that run no model (profile/noop kinds): any table drives
    them, e.g. a synthetic one in tests and benchmarks."""
    if table is None:
        if model not in FAMILIES:
            raise ConfigError(f"model {model!r} is a checkpoint, not a family "
                              f"({', '.join(FAMILIES)}): pass --table for it")
        path = _default_table_path(model)
    else:
        path = Path(table)
    try:
        t = ProfileTable.load(path)
    except TableError as e:
        raise ConfigError(f"cannot serve {model!r}: {e}") from e
    if check_family and model in FAMILIES and t.family != model:
        raise ConfigError(f"table {path} profiles family {t.family!r}, not model {model!r}")
    return t, path, norm_path_for(path)


def load_policy(spec: str, table: ProfileTable, **kw: Any) -> Policy:
    from superserve.scheduling import make_policy

    return make_policy(spec, table, **kw)
