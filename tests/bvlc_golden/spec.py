"""The header of a golden case: how its inputs are filled, its phase, whether backward runs.

A case is a small net file ``cases/NAME.prototxt`` whose Input layers give the inputs. Comment lines at its
top say how ``make_golden.py`` fills them (every input not named is Gaussian):

    # fill BLOB gaussian          standard normal
    # fill BLOB uniform LO HI     uniform in [LO, HI)
    # fill BLOB int LO HI         integers LO .. HI-1 (labels, indices)
    # fill BLOB binary            0 or 1 (sequence continuation flags)
    # phase TEST                  the net's phase (default TRAIN)
    # no_backward                 forward only (layers Caffe cannot differentiate)

This module is shared by the generator (run under BVLC's pycaffe) and the test (run under torchcaffe), so it
needs numpy alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"


@dataclass
class Case:
    name: str
    path: Path
    fills: dict = field(default_factory=dict)
    phase: str = "TRAIN"
    backward: bool = True

    @property
    def golden(self) -> Path:
        return HERE / f"{self.name}.npz"


def read_case(path) -> Case:
    path = Path(path)
    case = Case(path.stem, path)
    for n, line in enumerate(path.read_text().splitlines(), 1):
        words = line.strip().lstrip("#").split() if line.strip().startswith("#") else []
        if not words:
            continue
        if words[0] == "fill":
            kind = words[2] if len(words) > 2 else ""
            arity = {"gaussian": 0, "binary": 0, "uniform": 2, "int": 2}.get(kind)
            if arity is None or len(words) != 3 + arity:
                raise ValueError(f"{path}:{n}: expected 'fill BLOB gaussian|binary|uniform LO HI|int LO HI'")
            case.fills[words[1]] = (kind, *map(float, words[3:]))
        elif words[0] == "phase":
            case.phase = words[1]
        elif words[0] == "no_backward":
            case.backward = False
    return case


def all_cases() -> list:
    return [read_case(p) for p in sorted(CASES.glob("*.prototxt"))]


def fill(rule, shape, rng: np.random.RandomState) -> np.ndarray:
    kind, *args = rule
    if kind == "uniform":
        x = rng.uniform(args[0], args[1], size=shape)
    elif kind == "int":
        x = rng.randint(int(args[0]), int(args[1]), size=shape)
    elif kind == "binary":
        x = rng.randint(0, 2, size=shape)
    else:
        x = rng.randn(*shape)
    return np.asarray(x, dtype=np.float32)
