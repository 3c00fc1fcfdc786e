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
6. ``tools/evaluate.py``: the paper's AuC metrics (Table 1 protocol) on the held-out val crops, next to the
   all-gray prediction (ab = 0) and the ground truth (``demo_out/eval.json``, per image ``demo_out/eval.csv``).
7. The report ``demo_out/report.html``: one offline page with the training curve, the colorized photo, the
   AuC table and curves and colorized val crops.  (The VGG16 classification columns of Table 1 need the VGG16
   Caffe weights, which the demo does not have; ``tools/evaluate.py --classifier-prototxt ...`` adds them.)

Every step is one of the toolkit's own commands, printed before it runs.  ``--open`` opens the report in a
browser at the end.
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
    ap.add_argument("--open", action="store_true", help="open the report in a web browser at the end")
    ap.add_argument("--iterations", type=int, default=0,
                    help="train for N iterations instead of the solver's max_iter (a quicker, poorer demo)")
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
    run([caffe, "train", "-solver", solver_for(args.iterations)], log=OUT / "train.log")
    run([py, "tools/plot_training_log.py", OUT / "train.log", OUT / "loss.png"])
    weights = max(snapshots.glob("*.caffemodel"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    print("== 5. colorizing the held-out photo")
    colorized = OUT / f"{HELD_OUT}_colorized.png"
    run([py, "tools/colorize_image.py", "-img_in", OUT / f"{HELD_OUT}.png", "-img_out", colorized,
         "-prototxt", DEPLOY.relative_to(REPO), "-caffemodel", weights])
    side_by_side(colorized, OUT / f"{HELD_OUT}_gray_colorized_original.png")
    print("== 6. the paper's AuC metrics on the held-out val split, next to the all-gray prediction")
    cache = OUT / "eval.cache"
    if cache.exists():
        shutil.rmtree(cache)  # new weights: a fresh evaluation
    run([py, "tools/evaluate.py", "--prototxt", DEPLOY.relative_to(REPO), "--caffemodel", weights,
         "--lmdb", LMDB / "val", "--prior", PRIOR, "--batch", 4, "--json", OUT / "eval.json", "--no-progress"])
    print("== 7. the report")
    report = write_report(weights, time.time() - t0)
    summary = json.loads((OUT / "eval.json").read_text())
    above = summary["model"]["auc_raw"] > summary["gray"]["auc_raw"]
    print(f"== done in {time.time() - t0:.0f} s; the model scores {'above' if above else 'NOT above'} the all-gray "
          f"baseline (AuC {summary['model']['auc_raw']:.1f} % against {summary['gray']['auc_raw']:.1f} %)")
    print(f"   files in {OUT.relative_to(REPO)}/: {HELD_OUT}_gray_colorized_original.png, train.log, loss.png, "
          "eval.json, eval.csv")
    print(f"\n   REPORT: {report}\n")
    if args.open:
        import webbrowser

        webbrowser.open(report.as_uri())
    return 0


def solver_for(iterations: int):
    """The demo solver, or (``--iterations N``) a copy in demo_out/ that stops and snapshots at N."""
    if not iterations:
        return SOLVER.relative_to(REPO)
    import torchcaffe as caffe
    from google.protobuf import text_format

    sp = caffe.proto.caffe_pb2.SolverParameter()
    text_format.Merge(SOLVER.read_text(), sp)
    sp.max_iter = sp.snapshot = iterations
    sp.test_interval = min(sp.test_interval, iterations)
    path = OUT / "solver.prototxt"
    path.write_text(text_format.MessageToString(sp))
    return path.relative_to(REPO)


def write_report(weights: Path, seconds: float) -> Path:
    """``demo_out/report.html``: the demo's own sections, then evaluate's Table 1 rows, curves and examples."""
    from colorization import evaluate as ev

    res = ev.open_results(OUT / "eval.cache")
    summary = ev.summarize(res)

    def intro(rep):
        rep.paragraph("make demo: the whole pipeline on the CPU, on crops of photos that scikit-image ships: "
                      "LMDBs of Caffe Datums (gray photos filtered out), the ab prior of the training split, "
                      "training of the 1/8-width Table 1 net with its class-rebalanced losses (caffe train), "
                      f"colorization of a held-out photo and the paper's AuC metrics on held-out crops "
                      f"({seconds:.0f} s before this page). Weights: {weights.relative_to(REPO)}.")
        rep.heading("Training loss")
        rep.image(OUT / "loss.png", "caffe train's log, plotted by tools/plot_training_log.py")
        rep.heading("A held-out photo")
        rep.image(OUT / f"{HELD_OUT}_gray_colorized_original.png",
                  "grayscale input | colorized by the demo net | original (tools/colorize_image.py)")

    def outro(rep):
        rep.heading("Files")
        rep.paragraph(f"{OUT.relative_to(REPO)}/: eval.json (the table above), eval.csv (per image), train.log, "
                      "loss.png; the LMDBs in data/lmdb/demo, the prior in data/prior_probs_demo.npy, the "
                      "snapshots in snapshots/demo.")

    return ev.write_html(res, summary, OUT, before=[intro], after=[outro],
                         title="make demo: Colorful Image Colorization end to end")


if __name__ == "__main__":
    sys.exit(main())
