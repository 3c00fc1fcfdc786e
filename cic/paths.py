"""Where the toolkit's data files are found.

A data file named by a relative path (``"pts_in_hull.npy"``, ``"prior_probs.npy"``) is looked up the way a
Caffe user expects of any path in a prototxt (``data_param.source``, ``snapshot_prefix``, HDF5 lists): in the
working directory first; when it is not there, in the toolkit's own ``data/`` directory (the one next to the
``cic`` package, where the 313 ab bins ship). Absolute paths (after ``~`` expansion) are used as they are.
:func:`resolve_data_path` is the one place that applies this rule.
"""
from __future__ import annotations

import os
from pathlib import Path

#: The toolkit's data directory: ``cic/data`` in an installed toolkit (setup.py ships the repo's ``data/``
#: there as package data), ``<repo>/data`` in a checkout (``pip install -e .`` or ``PYTHONPATH=<repo>``).
_PACKAGED_DATA = Path(__file__).resolve().parent / "data"
DATA_DIR: Path = _PACKAGED_DATA if _PACKAGED_DATA.is_dir() else Path(__file__).resolve().parents[1] / "data"


def data_path_candidates(path: str | os.PathLike) -> list[Path]:
    """The places :func:`resolve_data_path` tries for ``path``, in order: ``[path]`` when absolute, else
    ``[<working directory>/path, DATA_DIR/path]``."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return [p]
    return [Path.cwd() / p, DATA_DIR / p]


def resolve_data_path(path: str | os.PathLike, *, must_exist: bool = False, what: str = "data file") -> Path:
    """Resolve ``path``: absolute -> as is; relative -> the working directory if the file is there, else the
    toolkit's ``data/``.

    When no candidate exists the last one (``DATA_DIR/path``, or the absolute path) is returned, or, with
    ``must_exist``, ``FileNotFoundError`` is raised with a message naming ``what`` and every place tried.
    """
    candidates = data_path_candidates(path)
    for c in candidates:
        if c.is_file():
            return c
    if must_exist:
        raise FileNotFoundError(not_found_message(path, what))
    return candidates[-1]


def not_found_message(path: str | os.PathLike, what: str = "data file") -> str:
    """``"<what> not found: '<path>' (tried <place>, <place>)"``."""
    tried = ", ".join(str(c) for c in data_path_candidates(path))
    return f"{what} not found: {str(path)!r} (tried {tried})"
