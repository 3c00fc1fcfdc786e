#!/usr/bin/env python
"""Time the soft-encoding of a training batch (40 x 2 x 56 x 56 ab) against the released approach.

The released ``NNEncLayer`` fitted ``sklearn.neighbors.NearestNeighbors(n_neighbors=10,
algorithm='ball_tree')`` on the 313 bin centres once, and per batch flattened the ab blob to (N*H*W, 2),
queried the 10 neighbours, computed Gaussian weights (sigma = 5), scattered them into a dense
(N*H*W, 313) array and reshaped it back to N x 313 x H x W. This script times exactly that, and
``cic.soft_encode`` (k = 10 as released, k = 5 as in the paper) on the same data in the same run (interleaved), on random
ab and on ab of real photos (scikit-image's samples), and prints the median and minimum times and the
ratio of the medians (sklearn / cic). "into a reused blob" is ``soft_encode(..., out=buffer)``, which is
what the layer's pycaffe path does with its top blob (on the CPU a fresh 157 MB output costs page faults). It also reports the largest
difference between the two encodings (they compute the same thing; only exact ties may differ).

    python tools/bench_soft_encoding.py [--device cuda] [--repeats 5] [--threads N]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import cic
from colorization.benchmark import SOFT_SHAPE as SHAPE, ReleasedNNEncode, timeit
from colorization.benchmark import real_ab_batch as real_batch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="device for cic (default cpu; the baseline is CPU-only)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repetitions (default 7)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    released = ReleasedNNEncode(cic.load_bins())

    print(f"batch {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}x{SHAPE[3]} float32, cic on {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else f", {torch.get_num_threads()} threads")
          + f", median of {args.repeats}; torch {torch.__version__}")
    rng = np.random.default_rng(0)
    for name, ab in (("random", rng.uniform(-110, 110, SHAPE).astype(np.float32)), ("real", real_batch())):
        ab_t = torch.from_numpy(ab).to(dev)
        buf = torch.empty((SHAPE[0], cic.Q) + SHAPE[2:], device=dev)
        res = timeit({"sklearn": lambda: released.encode(ab),
                      "k10": lambda: cic.soft_encode(ab_t, k=10),
                      "k5": lambda: cic.soft_encode(ab_t, k=5),
                      "k10out": lambda: cic.soft_encode(ab_t, k=10, out=buf)}, args.repeats, sync)
        diff = np.abs(cic.soft_encode(ab_t, k=10).cpu().numpy() - released.encode(ab)).max()
        sk = res["sklearn"][0]
        print(f"{name} ab (max |cic k=10 - sklearn| = {diff:.1e}):")
        for key, label in (("sklearn", "sklearn ball tree, k=10 (released)"), ("k10", "cic k=10"),
                           ("k5", "cic k=5 (paper)"), ("k10out", "cic k=10 into a reused blob")):
            med, mn = res[key]
            print(f"  {label:36s} {med * 1e3:8.1f} ms  (min {mn * 1e3:7.1f})  speed-up {sk / med:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
