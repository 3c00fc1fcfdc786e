#!/usr/bin/env python3
"""Command line of :mod:`colorization.evaluate` (see ``evaluate --help``)."""
from colorization.evaluate import main

raise SystemExit(main())
