"""Resolve what `superserve serve` serves: the ProfileTable, its SubnetNorm statistics file,
the policy and the model's input contract (ModelIO), from a model name (or checkpoint), its
weights and an optional table path."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from superserve.errors import ConfigError, TableError
from superserve.profiling.table import ProfileTable
from superserve.scheduling.base import Policy

log = logging.getLogger(__name__)

__all__ = ["load_policy", "model_io", "norm_path_for", "resolve_table"]

FAMILIES = ("resnet", "vit")  # the families that ship a table


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
            what = "ships no table" if _is_family_name(model) else "is a checkpoint, not a family"
            raise ConfigError(f"model {model!r} {what} ({', '.join(FAMILIES)} do): pass --table "
                              f"T.json, e.g. from `superserve profile --model {model} ... "
                              "--out T.json`")
        path = _default_table_path(model)
    else:
        path = Path(table)
    try:
        t = ProfileTable.load(path)
    except TableError as e:
        raise ConfigError(f"cannot serve {model!r}: {e}") from e
    if check_family and _is_family_name(model) and t.family != model:
        raise ConfigError(f"table {path} profiles family {t.family!r}, not model {model!r}")
    return t, path, norm_path_for(path)


def _is_family_name(model: str) -> bool:
    from superserve.models.registry import is_family

    return not Path(model).is_file() and is_family(model)


def model_io(model: str, weights: str = "", max_images: int = 256,
             needs_model: bool = True, labels_file: str | None = None,
             max_image_pixels: int | None = None) -> Any:
    """The served model's ModelIO: its input shape, the BYTES image input and the class count
    from the family's input contract (models.registry.model_input_spec; a built-in family
    without torch). `needs_model=False` (profile/noop workers, which run no model): a model
    that cannot be resolved serves FP32 tensors of the MNIST shape, as before. A family that
    ships no weights needs `weights` (ConfigError at start, not a crash loop of workers).
    `labels_file`: class names, one a line, for the classification output (serve --labels);
    `max_image_pixels`: the bound on one encoded image (serve --max-image-pixels)."""
    from superserve.errors import CheckpointError
    from superserve.models.registry import model_input_spec
    from superserve.server.codec import ModelIO

    if needs_model and not weights and _is_family_name(model):
        from superserve.models.registry import get_family

        if get_family(model).default_checkpoint is None:  # fail here, not in every worker
            raise ConfigError(f"family {model!r} ships no weights: pass --weights W (e.g. a "
                              "published OFA checkpoint)")
    try:
        spec = model_input_spec(model, weights)
    except (ConfigError, CheckpointError, OSError):
        if needs_model:
            raise
        if labels_file is not None:
            raise ConfigError(f"--labels: model {model!r} has no input contract here to name "
                              "the classes of") from None
        log.info("model %r has no input contract here: FP32 tensors of the default shape", model)
        return ModelIO(max_images=max_images)  # FP32 only: no image input to bound
    if labels_file is not None:
        from superserve.models.contract import read_labels

        spec = spec.with_labels(read_labels(labels_file), f"labels file {labels_file}")
    kw = {} if max_image_pixels is None else {"max_image_pixels": max_image_pixels}
    return ModelIO.for_input(spec, max_images=max_images, **kw)


def load_policy(spec: str, table: ProfileTable, **kw: Any) -> Policy:
    from superserve.scheduling import make_policy

    return make_policy(spec, table, **kw)
