"""Synthetic ImageNet-like image trees for the benchmarks (tools/bench_build_lmdb.py, tools/bench_data_layer.py):
crops of scikit-image's colour photographs at ImageNet's typical 500 x 375 size, with random gain and noise,
as JPEGs under ``<folder>/train/<wnid>/``."""
from __future__ import annotations

import os

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field", "retina",
          "immunohistochemistry", "colorwheel", "logo")


def _photos():
    import skimage.data as sd

    out = []
    for name in PHOTOS:
        try:
            img = getattr(sd, name)()
        except Exception:
            continue
        if img.ndim == 3 and img.shape[2] >= 3:
            out.append(np.ascontiguousarray(img[:, :, :3][:, :, ::-1]))  # RGB -> BGR
    if not out:
        raise SystemExit("no scikit-image sample photographs are available")
    return out


def make_jpegs(folder: str, n: int, seed: int = 0, classes: int = 10) -> int:
    """Write ``n`` ImageNet-like JPEGs under ``folder/train/<wnid>/``; returns the total bytes."""
    import cv2

    rng = np.random.default_rng(seed)
    photos = _photos()
    total = 0
    wnids = [f"n{10000000 + 1111 * k:08d}" for k in range(classes)]
    for i in range(n):
        src = photos[i % len(photos)]
        h, w = (375, 500) if rng.random() < 0.75 else (500, 375)
        s = rng.uniform(1.0, 1.6) * max(h / src.shape[0], w / src.shape[1])
        big = cv2.resize(src, (int(np.ceil(src.shape[1] * s)) + 1, int(np.ceil(src.shape[0] * s)) + 1),
                         interpolation=cv2.INTER_LINEAR)
        y = int(rng.integers(0, big.shape[0] - h + 1))
        x = int(rng.integers(0, big.shape[1] - w + 1))
        img = big[y:y + h, x:x + w].astype(np.float32)
        img = img * rng.uniform(0.8, 1.2, size=3) + rng.normal(0, 10, size=img.shape)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = np.clip(img, 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".JPEG", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        d = os.path.join(folder, "train", wnids[i % classes])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{wnids[i % classes]}_{i:06d}.JPEG"), "wb") as f:
            f.write(buf.tobytes())
        total += len(buf)
    return total
