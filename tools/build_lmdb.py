#!/usr/bin/env python3
"""Thin command line over colorization.build_lmdb (see its docstring)."""
from colorization.build_lmdb import main
raise SystemExit(main())
