#!/usr/bin/env python3
"""The demo (``make demo``): the whole pipeline, on the CPU, on photos that scikit-image ships.

1. Cut a small "dataset" of 64x64-ish crops from scikit-image's colour photos, plus its grayscale photos
   (which the builder must filter out, as the seed filters ImageNet's), into ``demo_out/images``.
2. ``tools/build_lmdb.py``: the train and val LMDBs of Caffe Datums (``data/lmdb/demo/{train,val}``).
3. ``tools/compute_prior.py``: the smoothed ab prior of the train split (``data/prior_probs_demo.npy``).
4. ``caffe train -solver prototxt/demo/solver.prototxt``: the 1/8-width Table 1 net with its four
   class-rebalanced losses (log in ``demo_out/train.log``, plotted in ``demo_out/loss.png``; snapshots in
   ``snapshots/demo/``).
5. ``tools/colorize_image.py`` with the trained deploy net on a photo held out of training.
6. ``tools/evaluate_auc.py``: the paper's AuC metrics on the held-out val crops, next to the all-gray
   prediction (ab = 0).

Every step is one of the toolkit's own commands, printed before it runs.  ``--iterations`` shortens training.
"""
import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

OUT = REPO / "demo_out"
LMDB = REPO / "data" / "lmdb" / "demo"
PRIOR = REPO / "data" / "prior_probs_demo.npy"
SOLVER = REPO / "prototxt" / "demo" / "solver.prototxt"
DEPLOY = REPO / "prototxt" / "demo" / "colorization_deploy.prototxt"

TRAIN_PHOTOS = ["astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                "retina", "colorwheel"]
GRAY_PHOTOS = ["camera", "moon", "coins", "text", "page", "brick", "grass", "gravel"]
HELD_OUT = "chelsea"


def run(cmd, log=None):
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    if log is None:
        subprocess.run([str(c) for c in cmd], cwd=REPO, check=True)
        return
    with open(log, "w") as f:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            f.write(line)
            every_250 = "Iteration " in line and "loss = " in line and int(line.split("Iteration ")[1].split()[0].rstrip(",")) % 250 == 0
            if every_250 or "Test net output" in line or "Snapshotting" in line or "Optimization Done" in line:
                print("  " + line.rstrip().split("] ", 1)[-1], flush=True)
        if proc.wait():
            raise subprocess.CalledProcessError(proc.returncode, cmd)


def photo(name):
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    return img


def write_crops(img, folder: Path, n: int, rng, prefix: str) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    h, w = img.shape[:2]
    bgr = img[..., ::-1] if img.ndim == 3 else img
    for i in range(n):
        s = int(rng.integers(min(h, w) // 4, min(h, w) // 2 + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        cv2.imwrite(str(folder / f"{prefix}_{i:03d}.jpg"), np.ascontiguousarray(bgr[y:y + s, x:x + s]),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])


def make_images(crops_per_photo: int) -> Path:
    rng = np.random.default_rng(0)
    root = OUT / "images"
    if root.exists():
        shutil.rmtree(root)
    for name in TRAIN_PHOTOS:
        write_crops(photo(name), root / "train" / name, crops_per_photo, rng, name)
    for name in GRAY_PHOTOS:
        write_crops(photo(name), root / "train" / "gray", 2, rng, name)
    write_crops(photo(HELD_OUT), root / "val" / HELD_OUT, 16, rng, HELD_OUT)
    import cv2

    cv2.imwrite(str(OUT / f"{HELD_OUT}.png"), photo(HELD_OUT)[..., ::-1])
    return root


def side_by_side(colorized: Path, out: Path) -> None:
    """gray input | colorized | original, in one image."""
    import cic
    from colorization.colorizer import read_image, write_image

    rgb, col = read_image(OUT / f"{HELD_OUT}.png"), read_image(colorized)
    L = cic.rgb2lab(rgb)[..., :1]
    gray = cic.lab2rgb(np.concatenate([L, np.zeros_like(L), np.zeros_like(L)], axis=2))
    gray = (255 * gray + 0.5).astype(np.uint8)
    write_image(out, np.concatenate([gray, col, rgb], axis=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=int, default=60, help="crops per training photo (default 60)")
    ap.add_argument("--data-only", action="store_true",
                    help="stop after the data (steps 1-3: images, LMDBs, prior); used by tools/device_check.sh")
    args = ap.parse_args(argv)
    t0 = time.time()
    OUT.mkdir(exist_ok=True)
    py = sys.executable
    caffe = Path(py).with_name("caffe")

    print("== 1. images from scikit-image's data module")
    images = make_images(args.crops)
    print("== 2. LMDBs (the seed's gray filter removes the grayscale photos)")
    for split in ("train", "val"):
        run([py, "tools/build_lmdb.py", "--root", images / split, "--split", split if split == "train" else "all",
             "--out", LMDB / split, "--resize", 64, "--workers", 2, "--overwrite", "--quiet"])
        manifest = json.loads((LMDB / split / "manifest.json").read_text())
        print(f"   {split}: {manifest['count']} images stored, {len(manifest['gray'])} filtered as gray, "
              f"{len(manifest['skipped'])} skipped")
    print("== 3. the ab prior of the train split")
    run([py, "tools/compute_prior.py", "--lmdb", LMDB / "train", "--out", PRIOR, "--no-progress"])
    if args.data_only:
        print(f"== data ready in {time.time() - t0:.0f} s: {LMDB.relative_to(REPO)}, {PRIOR.relative_to(REPO)}")
        return 0
    print("== 4. training: caffe train (CPU)")
    snapshots = REPO / "snapshots" / "demo"
    if snapshots.exists():
        shutil.rmtree(snapshots)
    snapshots.mkdir(parents=True)
    run([caffe, "train", "-solver", SOLVER.relative_to(REPO)], log=OUT / "train.log")
    run([py, "tools/plot_training_log.py", OUT / "train.log", OUT / "loss.png"])
    weights = max(snapshots.glob("*.caffemodel"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    print("== 5. colorizing the held-out photo")
    colorized = OUT / f"{HELD_OUT}_colorized.png"
    run([py, "tools/colorize_image.py", "-img_in", OUT / f"{HELD_OUT}.png", "-img_out", colorized,
         "-prototxt", DEPLOY.relative_to(REPO), "-caffemodel", weights])
    side_by_side(colorized, OUT / f"{HELD_OUT}_gray_colorized_original.png")
    print("== 6. the paper's AuC metrics on the held-out val split, next to the all-gray prediction")
    run([py, "tools/evaluate_auc.py", "-prototxt", DEPLOY.relative_to(REPO), "-caffemodel", weights,
         "-lmdb", LMDB / "val", "-prior", PRIOR.name, "-batch", 4])
    print(f"== done in {time.time() - t0:.0f} s: see {OUT.relative_to(REPO)}/ "
          f"({HELD_OUT}_gray_colorized_original.png, train.log, loss.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
