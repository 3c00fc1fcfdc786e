#!/usr/bin/env python3
"""The timing table of the README, measured in one run (see colorization/benchmark.py for what is timed).

    python tools/benchmark.py [--json FILE] [--markdown FILE] [--device cpu|cuda:0] [--batches 1,8]
                              [--repeats 10] [--train-iterations 3] [--only deploy,train,data,soft]

Run it on a quiet machine: every number is a wall-clock time of this run.  ``--json FILE`` writes all
results, with ``deploy_forward_ms`` = {"torchcaffe", "torchcaffe_optimized", "pytorch_reference",
"opencv_dnn"} (ms per image at the first batch size) and the machine described.
"""
import argparse
import json
import os
import sys

from colorization import benchmark


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prototxt", default=str(benchmark.DEPLOY), help="deploy net (default: the released topology)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1,8", help="deploy batch sizes (default 1,8)")
    ap.add_argument("--repeats", type=int, default=10, help="timed forwards per runtime and batch (default 10)")
    ap.add_argument("--train-iterations", type=int, default=3, help="timed solver steps per precision (default 3)")
    ap.add_argument("--train-batch", type=int, default=40)
    ap.add_argument("--data-batches", type=int, default=50)
    ap.add_argument("--soft-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch and OpenCV (0: their default)")
    ap.add_argument("--only", default="deploy,train,data,soft", help="sections to run (default: all)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the README table here")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in ("deploy", "train", "data", "soft")]
    if bad:
        ap.error(f"--only: unknown section(s) {', '.join(bad)} (deploy, train, data, soft)")
    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        ap.error(f"--batches must be comma-separated integers, got '{args.batches}'")
    if not os.path.exists(args.prototxt):
        ap.error(f"{args.prototxt}: no such file")
    if args.threads:
        import cv2
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    result = benchmark.run(args.prototxt, batches, args.repeats, args.train_iterations, args.train_batch,
                           args.data_batches, args.soft_repeats, args.device, sections)
    table = benchmark.markdown(result)
    print()
    print(table)
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    if args.markdown:
        with open(args.markdown + ".tmp", "w") as f:
            f.write(table)
        os.replace(args.markdown + ".tmp", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
