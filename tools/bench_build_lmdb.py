#!/usr/bin/env python3
"""Benchmark tools/build_lmdb.py on synthetic ImageNet-sized JPEGs.

Makes ``--n`` JPEGs of 500x375 / 375x500 (the typical ImageNet size) in a temporary folder -- crops of
scikit-image's bundled photographs, rescaled, colour-jittered and with sensor-like noise, saved at JPEG
quality 95 with 4:2:0 chroma subsampling (about 105 KB each; ImageNet's average about 110 KB) -- in class
folders, then times ``build_lmdb.py --workers N`` (raw Datum, 256x256) on them in a fresh process and prints
the rate of the build loop, its steady state, the whole command's, and the CPU time per image::

    python tools/bench_build_lmdb.py --n 2000 --workers 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from colorization.synthetic import make_jpegs  # the benchmarks' shared image tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="number of JPEGs")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--extra", default="", help="more build_lmdb.py flags, e.g. '--encoded' or '--fast-decode'")
    p.add_argument("--keep", help="keep the images and the database in this folder")
    args = p.parse_args(argv)

    tmp = args.keep or tempfile.mkdtemp(prefix="bench_build_lmdb_")
    os.makedirs(tmp, exist_ok=True)
    t = time.time()
    root = os.path.join(tmp, f"imagenet{args.n}")
    marker = root + ".done"
    if os.path.exists(marker):  # --keep folder from an earlier run: reuse its images
        with open(marker) as f:
            nbytes = int(f.read())
    else:
        nbytes = make_jpegs(root, args.n)
        with open(marker, "w") as f:
            f.write(str(nbytes))
    print(f"{args.n} JPEGs (500x375 / 375x500, {nbytes / args.n / 1024:.0f} KB on average) ready in "
          f"{time.time() - t:.1f} s under {root}")
    out = os.path.join(tmp, "db")
    cmd = [sys.executable, os.path.join(REPO, "tools", "build_lmdb.py"), "--root", root,
           "--split", "train", "--out", out, "--workers", str(args.workers), "--overwrite", "--quiet",
           *args.extra.split()]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        return 1
    with open(os.path.join(out, "manifest.json")) as f:
        m = json.load(f)
    size = os.path.getsize(os.path.join(out, "data.mdb"))
    print("command:", " ".join(cmd))
    print(f"build: {m['inputs']} images -> {m['count']} stored ({m['gray_count']} gray, {m['skipped_count']} "
          f"skipped), {size / 2**20:.0f} MiB")
    print(f"build loop: {m['duration_s']:.2f} s = {m['inputs'] / m['duration_s']:.1f} images/s "
          f"(workers {args.workers}, {os.cpu_count()} CPUs)")
    if m.get("startup_s") is not None and m["duration_s"] > m["startup_s"]:
        steady = (m["inputs"] - 1) / (m["duration_s"] - m["startup_s"])
        print(f"steady state (after the first image, {m['startup_s']:.2f} s of worker start-up): "
              f"{steady:.1f} images/s")
    print(f"whole command incl. interpreter start-up: {wall:.2f} s = {m['inputs'] / wall:.1f} images/s")
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPU time of the command (main process + workers): {cpu:.2f} s = {1000 * cpu / m['inputs']:.2f} ms "
          f"per image, i.e. {ncpu * m['inputs'] / cpu:.0f} images/s if {ncpu} CPUs were free for it "
          f"(load average now {os.getloadavg()[0]:.2f})")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
