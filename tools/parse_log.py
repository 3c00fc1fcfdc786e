#!/usr/bin/env python3
"""Thin command line over colorization.training_log.parse_main (see its docstring)."""
from colorization.training_log import parse_main
raise SystemExit(parse_main())
