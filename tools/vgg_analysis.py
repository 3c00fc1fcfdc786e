#!/usr/bin/env python3
"""Command line of :mod:`colorization.vgg_analysis` (see ``vgg_analysis --help``)."""
from colorization.vgg_analysis import main

raise SystemExit(main())
