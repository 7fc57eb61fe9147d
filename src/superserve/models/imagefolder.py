"""A user's labelled image folder as calibration / validation / test splits for the profiler.

    DIR/<class name>/<image>.{jpg,jpeg,png,bmp,webp}    (class sub-folders; the ImageNet
                                                         validation set as commonly re-laid)
    DIR/<image> ... with --image-labels FILE           (the ImageNet validation layout as
        FILE: "<image path under DIR> <class>" a line   shipped: one flat folder and a file
                                                         such as val.txt, "<file> <index>")

Classes are the sorted sub-folder names (index = position), or, with a labels file
`--labels FILE` holding one class name per line, that file's order (an OFA/ImageNet model's
output index). In an image-labels file a class is an output index or a class name (of
`--labels` when given, else the sorted names the file uses). Images are decoded with Pillow, resized (shorter side to the family's
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

__all__ = ["IMAGE_SUFFIXES", "decode_image", "list_image_folder", "list_labelled_images",
           "load_image_folder"]

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
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders of "
                          f"{root}; for a flat folder (the ImageNet validation layout) pass "
                          "--image-labels FILE ('<image> <class>' a line)")
    return paths, np.asarray(ys, dtype=np.int64), list(names)


def list_labelled_images(root: str | Path, image_labels: str | Path,
                         labels: list[str] | None = None
                         ) -> tuple[list[Path], np.ndarray, list[str]]:
    """(image paths, class indices, class names) of a folder whose classes an image-labels file
    gives: "<path under root> <class>" a line (space, tab or comma between), the class an
    output index or a class name."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--data {root} is not a directory")
    try:
        lines = Path(image_labels).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"image labels file {image_labels}: cannot read it: {e}") from None
    rows: list[tuple[Path, str]] = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, cls = line.replace(",", " ").replace("\t", " ").rpartition(" ")
        if not sep or not name.strip() or not cls:
            raise ConfigError(f"{image_labels} line {n}: expected '<image> <class>', got "
                              f"{line[:80]!r}")
        rows.append((root / name.strip(), cls))
    if not rows:
        raise ConfigError(f"image labels file {image_labels} names no images")
    numeric = all(c.isdigit() for _, c in rows)
    if labels is not None:
        names = list(labels)
    elif numeric:
        names = [str(i) for i in range(max(int(c) for _, c in rows) + 1)]
    else:
        names = sorted({c for _, c in rows})
    index = {n: i for i, n in enumerate(names)}
    paths, ys = [], []
    for path, cls in rows:
        if numeric:
            y = int(cls)
            if y >= len(names):
                raise ConfigError(f"{image_labels}: class index {y} of {path.name} is beyond "
                                  f"the {len(names)} classes")
        elif cls in index:
            y = index[cls]
        else:
            raise ConfigError(f"{image_labels}: class {cls!r} of {path.name} is not in the "
                              "labels file")
        if not path.is_file():
            raise ConfigError(f"{image_labels} names {path}, which is not a file")
        paths.append(path)
        ys.append(y)
    return paths, np.asarray(ys, dtype=np.int64), names


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
                      progress: Callable[[int, int], None] | None = None,
                      image_labels: str | Path | None = None) -> Splits:
    """Decode every image of the folder for `input_spec` (superserve.models.InputSpec) and
    split it (calibration, validation, test) by class, seeded. `image_labels`: the classes
    from that file (a flat folder) instead of class sub-folders."""
    from superserve.models.contract import read_labels

    labels = list(read_labels(labels_file)) if labels_file is not None else None
    if image_labels is not None:
        paths, y, names = list_labelled_images(root, image_labels, labels)
    else:
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
