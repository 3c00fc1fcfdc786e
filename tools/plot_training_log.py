#!/usr/bin/env python3
"""Thin command line over colorization.training_log.plot_main (see its docstring)."""
from colorization.training_log import plot_main
raise SystemExit(plot_main())
