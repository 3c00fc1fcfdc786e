#!/usr/bin/env python3
"""The paper's colorization Turing test, run locally in a browser: prepare a study, serve it, report.

    python tools/turing_test.py prepare STUDY --images DIR --prototxt P --caffemodel W [--gray]
    python tools/turing_test.py serve STUDY [--host 127.0.0.1] [--port 8000]
    python tools/turing_test.py report STUDY

See ``colorization/turing/`` (``python tools/turing_test.py -h``).
"""
from colorization.turing import main

if __name__ == "__main__":
    raise SystemExit(main())
