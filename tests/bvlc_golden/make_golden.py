#!/usr/bin/env python3
"""Record real BVLC Caffe's forward and backward of each golden case (see spec.py) as ``NAME.npz``.

Run with BVLC's own pycaffe, never torchcaffe (the build of ../shared/tools/build_bvlc_caffe.sh):

    PYTHONPATH=$BVLC/caffe/python GLOG_minloglevel=2 $BVLC/venv/bin/python tests/bvlc_golden/make_golden.py [NAME ...]

Each npz holds ``input__B`` (what was fed), ``param__L__i`` (the weights as BVLC's fillers made them),
``data__B`` (every blob after forward), ``topdiff__B`` (the random diffs given to the outputs that are not
losses), ``diff__B`` (every blob's diff after backward) and ``param_diff__L__i``. Inputs and top diffs come
from a generator seeded by the case name, so a case's file changes only when the case does.
"""
import argparse
import os
import sys
import zlib

import numpy as np

from spec import CASES, all_cases, fill

import caffe  # BVLC's pycaffe

if "torchcaffe" in getattr(caffe, "__file__", "") or hasattr(caffe, "torchcaffe"):
    sys.exit("make_golden.py must run under BVLC's pycaffe, not torchcaffe")


def record(case) -> dict:
    rng = np.random.RandomState(zlib.crc32(case.name.encode()))
    caffe.set_random_seed(1701)
    net = caffe.Net(str(case.path), getattr(caffe, case.phase))
    out = {}
    for b in net.inputs:
        x = fill(case.fills.get(b, ("gaussian",)), net.blobs[b].data.shape, rng)
        net.blobs[b].data[...] = x
        out[f"input__{b}"] = x
    for name, blobs in net.params.items():
        for i, p in enumerate(blobs):
            out[f"param__{name}__{i}"] = p.data.copy()
    net.forward()
    for b, blob in net.blobs.items():
        out[f"data__{b}"] = blob.data.copy()
    if case.backward:
        weights = net.blob_loss_weights
        diffs = {}
        for b in net.outputs:
            if weights.get(b, 0) == 0:
                diffs[b] = np.asarray(rng.randn(*net.blobs[b].diff.shape), dtype=np.float32)  # 0-axis: a float
                out[f"topdiff__{b}"] = diffs[b]
        # as net.backward(**diffs), which refuses a 0-axis diff and wants one for every output (losses too)
        for b, d in diffs.items():
            net.blobs[b].diff[...] = d
        net.backward()
        for b, blob in net.blobs.items():
            out[f"diff__{b}"] = blob.diff.copy()
        for name, blobs in net.params.items():
            for i, p in enumerate(blobs):
                out[f"param_diff__{name}__{i}"] = p.diff.copy()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="case names (default: every case)")
    args = ap.parse_args(argv)
    cases = [c for c in all_cases() if not args.names or c.name in args.names]
    missing = set(args.names) - {c.name for c in cases}
    if missing:
        sys.exit(f"no such case: {', '.join(sorted(missing))} (cases are {CASES}/NAME.prototxt)")
    os.chdir(CASES)  # paths inside a case (a source file) are relative to its folder, as the test runs it
    for case in cases:
        out = record(case)
        np.savez_compressed(case.golden, **out)
        print(f"{case.name}: {len(out)} arrays, {case.golden.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
