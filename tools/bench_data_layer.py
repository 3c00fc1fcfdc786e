#!/usr/bin/env python3
"""Benchmark the Data layer alone: images per second delivered with the colorization settings.

The released training net reads 256x256 raw Datums with ``batch_size: 40``, ``crop_size: 176``,
``mirror: true`` in phase TRAIN (BGR in [0, 255], no mean).  This script sets such a layer up on an LMDB
(``--lmdb``; by default it builds one from synthetic ImageNet-sized JPEGs with tools/build_lmdb.py), calls
``forward`` back to back -- the net doing nothing else, so the rate is the prefetch thread's (reading,
parsing, cropping, mirroring, converting to float32) -- and prints images/s::

    python tools/bench_data_layer.py [--lmdb DIR] [--batches 100] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_default_lmdb(folder: str, n: int) -> str:
    from colorization.synthetic import make_jpegs

    root = os.path.join(folder, "imagenet")
    if not os.path.exists(root):
        make_jpegs(root, n)
    out = os.path.join(folder, "lmdb")
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "build_lmdb.py"), "--root", root, "--split",
                    "train", "--out", out, "--quiet"], check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lmdb", help="a Datum LMDB (default: build one of --n synthetic images in a temp folder)")
    p.add_argument("--n", type=int, default=400, help="images in the default LMDB")
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=40)
    p.add_argument("--crop", type=int, default=176)
    p.add_argument("--prefetch", type=int, default=4)
    p.add_argument("--phase", choices=("TRAIN", "TEST"), default="TRAIN")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)

    import torch
    from google.protobuf import text_format

    from torchcaffe.blob import Blob
    from torchcaffe.layer import create_layer
    from torchcaffe.proto import caffe_pb2

    torch.set_num_threads(args.threads)
    tmp = None
    src = args.lmdb
    if not src:
        tmp = tempfile.mkdtemp(prefix="bench_data_layer_")
        t = time.time()
        src = build_default_lmdb(tmp, args.n)
        print(f"built {src} from {args.n} synthetic JPEGs in {time.time() - t:.1f} s")
    lp = caffe_pb2.LayerParameter()
    text_format.Parse(f'name: "data" type: "Data" top: "data" top: "label" '
                      f'transform_param {{ crop_size: {args.crop} mirror: true }} '
                      f'data_param {{ source: "{src}" batch_size: {args.batch_size} backend: LMDB '
                      f'prefetch: {args.prefetch} }}', lp)
    phase = caffe_pb2.TRAIN if args.phase == "TRAIN" else caffe_pb2.TEST
    torch.manual_seed(0)
    layer = create_layer(lp, phase, torch.device(args.device))
    top = [Blob(device=args.device), Blob(device=args.device)]
    layer.setup([], top)
    for _ in range(3):
        layer.forward([], top)
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(args.batches):
        layer.forward([], top)
    sync()
    dt = time.perf_counter() - t
    n = args.batches * args.batch_size
    shape = "x".join(map(str, layer.datum_shape))
    print(f"Data layer ({args.phase}, batch {args.batch_size}, crop {args.crop}, mirror, prefetch "
          f"{args.prefetch}, device {args.device}, {layer.entries} records of {shape}): {n} images in {dt:.2f} s = {n / dt:.0f} images/s ({1000 * dt / args.batches:.1f} ms per batch); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    layer.close()
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
