#!/usr/bin/env python3
"""Write prototxt/ (nets, solvers, fixed-layer weights) from the tables in colorization/make_prototxt.py
(also `cic-make-prototxt`); `--check` verifies that the committed files are up to date.
"""
import sys

from colorization.make_prototxt import main

if __name__ == "__main__":
    sys.exit(main())
