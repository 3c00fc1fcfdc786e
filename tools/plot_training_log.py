#!/usr/bin/env python3
"""Plot the train and test losses of a ``caffe train`` log (glog format) against the iteration.

    python tools/plot_training_log.py demo_out/train.log demo_out/loss.png [--output loss8_313]

Reads the log with ``tools/parse_log.py`` (Caffe's parse_log.py format); every net output (each loss of the
colorization net's four heads) gets a curve, train solid, test dashed, unless ``--output`` picks some.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from parse_log import parse_log  # noqa: E402

_META = {"NumIters", "Seconds", "LearningRate"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("image", help="output image (.png, .pdf, .svg)")
    ap.add_argument("--output", action="append", help="net output(s) to plot (default: all)")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, test = parse_log(args.log)
    if not train and not test:
        print(f"plot_training_log: {args.log}: no 'Iteration' lines with net outputs", file=sys.stderr)
        return 1
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rows, style, phase in ((train, "-", "train"), (test, "--", "test")):
        names = [k for k in (rows[0].keys() if rows else []) if k not in _META]
        for name in names:
            if args.output and name not in args.output:
                continue
            pts = [(r["NumIters"], r[name]) for r in rows if r.get(name) is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=f"{phase} {name}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(Path(args.log).name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.image, dpi=120)
    print(f"wrote {args.image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
