#!/usr/bin/env python3
"""Table 1 of the seed for a net prototxt (the logic: colorization/describe_net.py; also `cic-describe-net`).

    python tools/describe_net.py NET.prototxt [--json]
"""
import sys

from colorization.describe_net import main

if __name__ == "__main__":
    sys.exit(main())
