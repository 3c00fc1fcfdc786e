#!/usr/bin/env python3
"""Thin command line over colorization.compute_prior (see its docstring)."""
from colorization.compute_prior import main
raise SystemExit(main())
