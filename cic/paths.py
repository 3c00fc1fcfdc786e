"""Where the toolkit's data files live.

Data files named by a relative path (``"pts_in_hull.npy"``, ``"prior_probs.npy"``) are looked up in the
toolkit's own ``data/`` directory (the one next to the ``cic`` package), never in the working directory, so
that a net or a script behaves the same wherever it is started. Absolute paths are used as they are.
"""
from __future__ import annotations

import os
from pathlib import Path

#: The toolkit's data directory: ``cic/data`` in an installed toolkit (setup.py ships the repo's ``data/``
#: there as package data), ``<repo>/data`` in a checkout (``pip install -e .`` or ``PYTHONPATH=<repo>``).
_PACKAGED_DATA = Path(__file__).resolve().parent / "data"
DATA_DIR: Path = _PACKAGED_DATA if _PACKAGED_DATA.is_dir() else Path(__file__).resolve().parents[1] / "data"


def resolve_data_path(path: str | os.PathLike) -> Path:
    """Return ``path`` if it is absolute (after ``~`` expansion), else ``DATA_DIR / path``.

    The file is not required to exist; callers that read it report the resolved path when it is missing.
    """
    p = Path(path).expanduser()
    return p if p.is_absolute() else DATA_DIR / p
