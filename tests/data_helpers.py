"""Helpers for the data tests: a synthetic ImageNet-shaped tree, LMDB writing/reading, the builder's CLI.

Not a conftest: import it as ``from data_helpers import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""
from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BUILD_LMDB = REPO / "tools" / "build_lmdb.py"
GOLDEN_DATA = REPO.parent / "shared" / "caffe_golden" / "data_and_colornet"

WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted: labels 0, 1, 2


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def env_for_subprocess() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_build(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run tools/build_lmdb.py with ``args`` in a subprocess (quiet)."""
    cmd = [PYTHON, str(BUILD_LMDB), "--quiet", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env_for_subprocess(), timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


# ---------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------

def colour_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A saturated, smooth BGR uint8 image with some noise (clearly colour under the |ab| <= 5 rule)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.02, 0.12, size=3)
    ph = rng.uniform(0, 6.28, size=3)
    chans = [127 + 110 * np.sin(f[c] * (xx + (c + 1) * yy) + ph[c]) for c in range(3)]
    img = np.stack(chans, axis=-1) + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def near_gray_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A gray gradient with a faint tint (|a|, |b| well under 5): filtered as gray."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = 60 + 120 * (xx / max(w - 1, 1)) * 0.5 + 60 * (yy / max(h - 1, 1))
    img = np.stack([g, g + 1, g + 2], axis=-1)  # B, G, R: a slight warm tint
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(bgr: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def png_bytes(arr: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def broken_files(folder: Path, rng: np.random.Generator) -> Dict[str, dict]:
    """Write one file of each awkward kind into ``folder``; returns name -> expectation.

    Expectation keys: ``status`` ('ok', 'gray', 'skip') and ``reason`` (a substring of the skip reason or of
    the conversion note).
    """
    from PIL import Image

    exp: Dict[str, dict] = {}
    good = jpeg_bytes(colour_image(rng, 60, 80))
    write(folder / "x_truncated.JPEG", good[: len(good) * 6 // 10])
    exp["x_truncated.JPEG"] = {"status": "skip", "reason": "truncated JPEG"}
    junk = rng.integers(0, 256, size=3000, dtype=np.uint8)
    junk[0] = 0x17
    write(folder / "x_random.JPEG", junk.tobytes())
    exp["x_random.JPEG"] = {"status": "skip", "reason": "not an image (unrecognised content)"}
    write(folder / "x_notes.txt", b"This is not an image.\nJust some text.\n")
    exp["x_notes.txt"] = {"status": "skip", "reason": "not an image (text file)"}
    write(folder / "x_empty.JPEG", b"")
    exp["x_empty.JPEG"] = {"status": "skip", "reason": "empty file"}
    rgb = colour_image(rng, 60, 80)[:, :, ::-1]
    bio = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).convert("CMYK").save(bio, format="JPEG", quality=92)
    write(folder / "x_cmyk.JPEG", bio.getvalue())
    exp["x_cmyk.JPEG"] = {"status": "ok", "reason": "CMYK JPEG converted to BGR"}
    img16 = colour_image(rng, 60, 80).astype(np.uint16) * 257
    write(folder / "x_16bit.png", png_bytes(img16))
    exp["x_16bit.png"] = {"status": "ok", "reason": "16-bit PNG reduced to 8 bits"}
    bgra = np.concatenate([colour_image(rng, 60, 80), np.full((60, 80, 1), 128, np.uint8)], axis=2)
    write(folder / "x_alpha.png", png_bytes(bgra))
    exp["x_alpha.png"] = {"status": "ok", "reason": "alpha channel dropped"}
    bio = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(colour_image(rng, 60, 80)[:, :, ::-1])).convert(
        "P", palette=Image.ADAPTIVE, colors=64).save(bio, format="PNG")
    write(folder / "x_palette.png", bio.getvalue())
    exp["x_palette.png"] = {"status": "ok", "reason": "palette PNG expanded to BGR"}
    write(folder / "x_tiny.JPEG", jpeg_bytes(colour_image(rng, 1, 1)))
    exp["x_tiny.JPEG"] = {"status": "skip", "reason": "tiny"}
    gray = near_gray_image(rng, 60, 80)[:, :, 0]
    write(folder / "x_grayscale.JPEG", jpeg_bytes(gray))
    exp["x_grayscale.JPEG"] = {"status": "gray", "reason": None}
    write(folder / "x_png_inside.JPEG", png_bytes(colour_image(rng, 60, 80)))
    exp["x_png_inside.JPEG"] = {"status": "ok", "reason": "PNG content in a .jpeg file"}
    return exp


def make_imagenet_tree(root: Path, per_class: int = 4, n_val: int = 24, seed: int = 0,
                       broken: bool = True, size=(60, 80)) -> dict:
    """A small ILSVRC2012-shaped tree.

    ``train/<wnid>/<wnid>_<k>.JPEG``: per class ``per_class`` colour JPEGs and one near-gray JPEG, plus (in
    the first class, when ``broken``) one file of each awkward kind.  ``val/ILSVRC2012_val_%08d.JPEG``
    (1..n_val) with labels in ``val.txt`` at the root; every 5th validation image is near-gray.
    Returns the expectations: ``train`` {relative path: dict(status, label, reason)}, ``val`` likewise
    (ordered by file name), ``val_labels`` {file: label}.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    train: Dict[str, dict] = {}
    for ci, wnid in enumerate(WNIDS):
        for k in range(per_class):
            rel = f"{wnid}/{wnid}_{k:04d}.JPEG"
            hh, ww = h + int(rng.integers(0, 20)), w + int(rng.integers(0, 20))
            write(root / "train" / rel, jpeg_bytes(colour_image(rng, hh, ww)))
            train[rel] = {"status": "ok", "label": ci, "reason": None}
        rel = f"{wnid}/{wnid}_gray.JPEG"
        write(root / "train" / rel, jpeg_bytes(near_gray_image(rng, h, w)))
        train[rel] = {"status": "gray", "label": ci, "reason": None}
    if broken:
        for name, e in broken_files(root / "train" / WNIDS[0], rng).items():
            train[f"{WNIDS[0]}/{name}"] = dict(e, label=0)
    val: Dict[str, dict] = {}
    labels = {}
    lines = []
    for i in range(1, n_val + 1):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        lab = int(rng.integers(0, len(WNIDS)))
        if i % 5 == 0:
            write(root / "val" / name, jpeg_bytes(near_gray_image(rng, h, w)))
            val[name] = {"status": "gray", "label": lab, "reason": None}
        elif i == 3 and broken:
            good = jpeg_bytes(colour_image(rng, h, w))
            write(root / "val" / name, good[: len(good) // 2])
            val[name] = {"status": "skip", "label": lab, "reason": "truncated JPEG"}
        else:
            write(root / "val" / name, jpeg_bytes(colour_image(rng, h, w)))
            val[name] = {"status": "ok", "label": lab, "reason": None}
        labels[name] = lab
        lines.append(f"{name} {lab}\n")
    (root / "val.txt").write_text("".join(lines))
    return {"train": train, "val": val, "val_labels": labels}


# ---------------------------------------------------------------------------------------------------------
# LMDB
# ---------------------------------------------------------------------------------------------------------

def read_lmdb(path) -> List[tuple]:
    """All (key, value) pairs of an LMDB, in key order."""
    from torchcaffe.builtin.data import open_lmdb, release_lmdb  # shares an env a Data layer holds open

    env = open_lmdb(str(path))
    try:
        with env.begin() as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    finally:
        release_lmdb(env)


def write_lmdb(path, images: List[np.ndarray], labels: Optional[List[int]] = None, encoded: bool = False,
               keys: Optional[List[bytes]] = None) -> None:
    """An LMDB of Datums: raw CHW uint8 images (or, with ``encoded``, PNG bytes of HWC BGR images)."""
    import lmdb

    from torchcaffe.proto import caffe_pb2

    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, img in enumerate(images):
            d = caffe_pb2.Datum()
            if encoded:
                d.data = png_bytes(img)
                d.encoded = True
            else:
                c, h, w = img.shape
                d.channels, d.height, d.width = c, h, w
                d.data = np.ascontiguousarray(img, dtype=np.uint8).tobytes()
            d.label = int(labels[i]) if labels is not None else i
            txn.put(keys[i] if keys else f"{i:08d}".encode(), d.SerializeToString())
    env.close()


def datum_of(value: bytes):
    from torchcaffe.proto import caffe_pb2

    d = caffe_pb2.Datum()
    d.ParseFromString(value)
    return d
