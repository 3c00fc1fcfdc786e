#!/usr/bin/env python3
"""Time the full-width colorization deploy net (224x224) in torchcaffe and in OpenCV DNN, same files, same run.

    python tools/bench_deploy.py [--prototxt prototxt/release_v2/colorization_deploy_v2.prototxt]
                                 [--iterations 10] [--gpu 0] [--threads N]

The net gets random weights (He-normal; colorizer.random_colorization_weights), which torchcaffe writes as a binary caffemodel; OpenCV's independent
Caffe importer (cv2.dnn.readNetFromCaffe) loads that file.  Prints the median forward time of each, and the
largest relative difference of the outputs (the same check tests/test_opencv_crosscheck.py makes).  With
``--gpu N`` torchcaffe runs on CUDA device N (OpenCV stays on the CPU).
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from colorization.colorizer import REPO, ab_output, random_colorization_weights
import torchcaffe as caffe

DEFAULT = REPO / "prototxt" / "release_v2" / "colorization_deploy_v2.prototxt"


def timed(fn, iterations, sync=lambda: None):
    fn()
    fn()  # warm-up
    times = []
    for _ in range(iterations):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prototxt", default=str(DEFAULT))
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--gpu", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for both (0: library default)")
    args = ap.parse_args(argv)
    import cv2

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    device = "cpu" if args.gpu < 0 else f"cuda:{args.gpu}"
    caffe.init_log(1)  # no net-construction INFO lines
    net = caffe.Net(args.prototxt, caffe.TEST, device="cpu")
    random_colorization_weights(net, seed=0)
    x = np.random.default_rng(0).uniform(-50, 50, net.blobs["data_l"].shape).astype(np.float32)
    out_name = ab_output(net)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "random.caffemodel"
        net.save(str(model))
        size_mb = model.stat().st_size / 2**20
        cvnet = cv2.dnn.readNetFromCaffe(args.prototxt, str(model))
    net.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run_tc():
        net.blobs["data_l"].data_t = torch.from_numpy(x)
        net.forward_loss()

    def run_cv():
        cvnet.setInput(x)
        return cvnet.forward(out_name)

    with torch.no_grad():
        t_tc = timed(run_tc, args.iterations, sync)
    t_cv = timed(run_cv, args.iterations)
    ours = net.blobs[out_name].data
    theirs = run_cv()
    rel = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))
    dev = torch.cuda.get_device_name(args.gpu) if args.gpu >= 0 else f"CPU, {torch.get_num_threads()} threads"
    print(f"net: {args.prototxt} (input {tuple(x.shape)}, weights {size_mb:.0f} MB)")
    print(f"torchcaffe {torch.__version__} on {dev}: {t_tc:.1f} ms per forward (median of {args.iterations})")
    print(f"OpenCV DNN {cv2.__version__} on CPU: {t_cv:.1f} ms per forward (median of {args.iterations})")
    print(f"ratio OpenCV / torchcaffe: {t_cv / t_tc:.2f}")
    print(f"max relative difference of '{out_name}': {rel:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
