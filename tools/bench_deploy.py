#!/usr/bin/env python3
"""Time a colorization deploy net (224x224) in torchcaffe (exact), its fast path, a plain torch.nn module of the
same graph and OpenCV DNN, same caffemodel, same run: the deploy section of tools/benchmark.py alone.

    python tools/bench_deploy.py [--prototxt prototxt/release_v2/colorization_deploy_v2.prototxt]
                                 [--iterations 10] [--batches 1,8] [--gpu 0] [--threads N]
"""
import argparse
import sys

from colorization import benchmark


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prototxt", default=str(benchmark.DEPLOY))
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--batches", default="1")
    ap.add_argument("--gpu", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch and OpenCV (0: library default)")
    args = ap.parse_args(argv)
    if args.threads:
        import cv2
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    batches = tuple(int(b) for b in args.batches.split(","))
    result = benchmark.run(args.prototxt, batches, args.iterations, device="cpu" if args.gpu < 0 else f"cuda:{args.gpu}",
                           sections=("deploy",))
    print(benchmark.markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
