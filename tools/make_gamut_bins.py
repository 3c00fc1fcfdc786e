#!/usr/bin/env python3
"""The in-gamut ab bins for a quantization grid (the logic: colorization/gamut_bins.py; also
`cic-make-gamut-bins`).

    python tools/make_gamut_bins.py --grid 10 --out bins_grid10.npy
"""
import sys

from colorization.gamut_bins import main

if __name__ == "__main__":
    sys.exit(main())
