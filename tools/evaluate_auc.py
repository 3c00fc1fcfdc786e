#!/usr/bin/env python3
"""The paper's AuC metrics of a colorization model over an LMDB split (the logic: colorization/evaluate_auc.py;
also the console command `cic-evaluate-auc`).

    python tools/evaluate_auc.py -prototxt prototxt/colorization_deploy.prototxt -caffemodel W.caffemodel \\
        -lmdb data/lmdb/test [-prior data/prior_probs.npy] [-batch 10] [-limit N] [-gpu 0]
"""
import sys

from colorization.evaluate_auc import main

if __name__ == "__main__":
    sys.exit(main())
