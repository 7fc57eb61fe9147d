"""One image -> the model's input, as the family's InputSpec says (no torch, no torchvision).

Shared by the profiler's image folder (models/imagefolder.py) and the server's image input
(server/images.py), so a subnet is served on exactly the pixels its accuracy was measured on.

The transform is the usual evaluation one: convert to RGB (or grey), resize the shorter side to
`resize` (0: to the crop's size), centre-crop `height` x `width`, scale to [0, 1]; the model
normalises with mean/std itself. Two things make it cheap without changing the result:

- only the crop is resampled (`Image.resize(box=...)`): the output pixel x reads the source at
  (left + x + 0.5) * w / rw, exactly as resize-then-crop, and an elongated image cannot blow
  up into a huge intermediate;
- a JPEG at least twice the needed size is decoded at 1/2, 1/4 or 1/8 scale by libjpeg
  (`Image.draft`), still at least as large as the resize needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["crop_box", "to_array"]


def crop_box(w: int, h: int, height: int, width: int, resize: int
             ) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """The resized size (rw, rh) of a w x h image and the source box of its centre crop."""
    short = resize or max(height, width)
    scale = short / min(w, h)
    rw, rh = max(width, round(w * scale)), max(height, round(h * scale))
    left, top = (rw - width) // 2, (rh - height) // 2
    sx, sy = w / rw, h / rh
    return (rw, rh), (left * sx, top * sy, (left + width) * sx, (top + height) * sy)


def to_array(im: Any, channels: int, height: int, width: int, resize: int = 0,
             interpolation: str = "bilinear") -> np.ndarray:
    """A PIL image (opened, maybe not yet loaded) -> (C, H, W) float32 in [0, 1]."""
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                "nearest": Image.NEAREST}[interpolation]
    mode = "RGB" if channels == 3 else "L"
    (rw, rh), _ = crop_box(*im.size, height, width, resize)
    if im.format == "JPEG" and rw * 2 <= im.size[0] and rh * 2 <= im.size[1]:
        im.draft(mode, (rw, rh))  # DCT scaling: decodes at >= (rw, rh)
    if im.mode != mode:
        im = im.convert(mode)
    _, box = crop_box(*im.size, height, width, resize)
    a = np.asarray(im.resize((width, height), resample, box=box), dtype=np.float32)
    a = a * np.float32(1 / 255)
    return a[None] if channels == 1 else np.ascontiguousarray(a.transpose(2, 0, 1))
