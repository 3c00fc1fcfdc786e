"""Compute the in-gamut ab bins for a quantization grid (for users who change the quantization).

Rule (cic.bins.gamut_bins): the bin centred at (grid*i, grid*j) is in gamut if at least one 8-bit sRGB
colour (all 16.7M by default, i.e. every lightness) has its CIE Lab ab value in the closed square of
half-width grid/2 + margin around the centre -- with margin 0, exactly the bins that nearest-centre
quantization of real colours can produce. Bins are written as int64 (M, 2), sorted by a then b (the
released file's order convention).

The released model's 313 bins (data/pts_in_hull.npy) stay the default everywhere: the network's output
channels mean those bins in that order. For grid 10 this rule gives 261 of them (margin 5: 309, nothing
outside them); the tool prints the comparison.

    python tools/make_gamut_bins.py --grid 10 --out bins_grid10.npy
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cic

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", type=int, default=cic.GRID, help="grid spacing in ab units (default 10)")
    ap.add_argument("--margin", type=float, default=0.0,
                    help="widen each cell's half-width grid/2 by this many ab units (default 0)")
    ap.add_argument("--levels-step", type=int, default=1,
                    help="sample every n-th 8-bit level per channel (255 always included; default 1 = all)")
    ap.add_argument("--device", default=None, help="torch device (default cpu)")
    ap.add_argument("--out", required=True, help="output .npy (int64, shape (M, 2))")
    args = ap.parse_args(argv)
    if args.grid <= 0 or args.levels_step <= 0 or args.margin < 0:
        ap.error("--grid and --levels-step must be positive, --margin non-negative")

    bins = cic.gamut_bins(args.grid, margin=args.margin, levels_step=args.levels_step, device=args.device)
    released = {tuple(r) for r in cic.load_bins()}
    got = {tuple(r) for r in bins}
    print(f"grid {args.grid}, margin {args.margin:g}: {len(bins)} in-gamut bins")
    print(f"released 313: {len(got & released)} reproduced, {len(got - released)} not among them, "
          f"{len(released - got)} of them not produced")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        np.save(f, bins.astype(np.int64))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
