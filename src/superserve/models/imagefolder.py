"""A user's labelled image folder as calibration / validation / test splits for the profiler.

    DIR/<class name>/<image>.{jpg,jpeg,png,bmp,webp}    (the ImageNet validation layout)

Classes are the sorted sub-folder names (index = position), or, with a labels file
`--labels FILE` holding one class name per line, that file's order (an OFA/ImageNet model's
output index). Images are decoded with Pillow, resized (shorter side to the family's
InputSpec.resize, bilinear), centre-cropped to its height x width and scaled to [0, 1], as the
server's image path does. A seeded, class-stratified split gives the calibration images
(SubnetNorm statistics), the validation images (the search's accuracy) and held-out test images
(reported only); no image is in two splits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from superserve.data import Splits, stratified_split
from superserve.errors import ConfigError

__all__ = ["IMAGE_SUFFIXES", "decode_image", "list_image_folder", "load_image_folder"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_image_folder(root: str | Path, labels: list[str] | None = None
                      ) -> tuple[list[Path], np.ndarray, list[str]]:
    """(image paths, class indices, class names) of a class-per-sub-folder tree."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--data {root} is not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    names = labels if labels is not None else [p.name for p in folders]
    index = {n: i for i, n in enumerate(names)}
    paths, ys = [], []
    for folder in folders:
        if folder.name not in index:
            raise ConfigError(f"class folder {folder.name!r} is not in the labels file")
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(f)
                ys.append(index[folder.name])
    if not paths:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders of {root}")
    return paths, np.asarray(ys, dtype=np.int64), list(names)


def decode_image(path: str | Path, channels: int, height: int, width: int, resize: int,
                 interpolation: str = "bilinear") -> np.ndarray:
    """One file -> (C, H, W) float32 in [0, 1]: resize the shorter side, centre crop (the
    server's image input does the same: superserve.models.preprocess)."""
    from PIL import Image

    from superserve.models.preprocess import to_array

    with Image.open(path) as im:
        return to_array(im, channels, height, width, resize, interpolation)


def load_image_folder(root: str | Path, input_spec, fractions: tuple[float, float, float] =
                      (0.4, 0.4, 0.2), seed: int = 0, labels_file: str | Path | None = None,
                      progress: Callable[[int, int], None] | None = None) -> Splits:
    """Decode every image of the folder for `input_spec` (superserve.models.InputSpec) and
    split it (calibration, validation, test) by class, seeded."""
    labels = None
    if labels_file is not None:
        labels = [ln.strip() for ln in Path(labels_file).read_text().splitlines() if ln.strip()]
    paths, y, names = list_image_folder(root, labels)
    s = input_spec
    x = np.empty((len(paths), s.channels, s.height, s.width), dtype=np.float32)
    for i, p in enumerate(paths):
        try:
            x[i] = decode_image(p, s.channels, s.height, s.width, s.resize, s.interpolation)
        except Exception as e:  # Pillow raises several types for a corrupt or foreign file
            raise ConfigError(f"cannot decode image {p}: {e}") from e
        if progress is not None:
            progress(i + 1, len(paths))
    parts = stratified_split(y, fractions, seed)
    log.info("image folder %s: %d images, %d classes, split %s", root, len(paths), len(names),
             [len(p) for p in parts])
    return Splits(*((x[idx], y[idx]) for idx in parts), name=f"folder:{Path(root).name}")
