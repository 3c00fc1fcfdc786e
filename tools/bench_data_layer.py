#!/usr/bin/env python3
"""Benchmark the Data layer alone: images per second delivered with the colorization settings.

The released training net reads 256x256 raw Datums with ``batch_size: 40``, ``crop_size: 176``,
``mirror: true`` in phase TRAIN (BGR in [0, 255], no mean).  This sets such a layer up on an LMDB (``--lmdb``;
by default one of synthetic 500x375 JPEGs built with tools/build_lmdb.py), calls ``forward`` back to back -- the
net doing nothing else, so the rate is the prefetch thread's -- and prints images/s (the Data row of
tools/benchmark.py)::

    python tools/bench_data_layer.py [--lmdb DIR] [--batches 100] [--device cpu]
"""
import argparse
import sys

from colorization import benchmark


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

    torch.set_num_threads(args.threads)
    benchmark.data_layer_rate(args.lmdb, args.n, args.batches, args.batch_size, args.crop, args.prefetch,
                              args.device, args.phase)
    return 0


if __name__ == "__main__":
    sys.exit(main())
