"""Where the application's shipped files live.

``PROTOTXT_DIR`` holds the nets, solvers and fixed-layer weights that ``tools/make_prototxt.py`` writes: the
repo's ``prototxt/`` in a checkout, ``colorization/prototxt/`` in an installed toolkit (setup.py ships the
folder there as package data).  The tools' defaults name files in it, so they work in both.
"""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
#: The repo root in a checkout (where ``prototxt/``, ``data/`` and ``tools/`` lie); in an installed toolkit,
#: the site-packages folder (only its packaged copies below are used there).
REPO = _HERE.parent
_PACKAGED_PROTOTXT = _HERE / "prototxt"
PROTOTXT_DIR: Path = _PACKAGED_PROTOTXT if _PACKAGED_PROTOTXT.is_dir() else REPO / "prototxt"

#: The deploy net that the colorizer and the evaluation use by default.
DEFAULT_PROTOTXT: Path = PROTOTXT_DIR / "colorization_deploy.prototxt"
#: The demo's 1/8-width deploy net (trained by ``make demo``).
DEMO_PROTOTXT: Path = PROTOTXT_DIR / "demo" / "colorization_deploy.prototxt"
