"""torchcaffe: a Caffe-compatible runtime on PyTorch.

``import torchcaffe as caffe`` gives pycaffe's API: ``Net``, ``Layer`` (for Python layers), the solvers,
``io``, ``NetSpec`` with ``layers`` / ``params``, ``proto.caffe_pb2``, ``TRAIN`` / ``TEST`` and the mode
functions.  It reads and writes Caffe's own files (prototxt, caffemodel, solverstate, LMDB Datum) and computes
what BVLC Caffe 1.0 computes, on the CPU or a CUDA device.
"""
from importlib import import_module as _import_module

from .proto import caffe_pb2  # noqa: F401
from . import proto  # noqa: F401
from .mode import (TRAIN, TEST, set_mode_cpu, set_mode_gpu, set_device, set_random_seed,  # noqa: F401
                   get_device, init_log)
from .common import (solver_count, solver_rank, set_solver_count, set_solver_rank,  # noqa: F401
                     set_multiprocess, has_nccl, NCCL)

__version__ = "0.1.0"

# Resolved on first use, so that importing torchcaffe stays light and modules load only when needed.
_LAZY = {
    "Net": (".net", "Net"),
    "Blob": (".blob", "Blob"),
    "Layer": (".python_layer", "Layer"),
    "layer_types": (".layer", "layer_types"),
    "layer_type_list": (".layer", "layer_types"),
    "log": (".mode", "log"),
    "draw": (".draw", None),
    "coord_map": (".coord_map", None),
    "classifier": (".classifier", None),
    "detector": (".detector", None),
    "net_spec": (".net_spec", None),
    "Classifier": (".classifier", "Classifier"),
    "Detector": (".detector", "Detector"),
    "Timer": (".timer", "Timer"),
    "io": (".io", None),
    "NetSpec": (".net_spec", "NetSpec"),
    "layers": (".net_spec", "layers"),
    "params": (".net_spec", "params"),
    "to_proto": (".net_spec", "to_proto"),
    "get_solver": (".solver", "get_solver"),
    "Solver": (".solver", "Solver"),
    "SGDSolver": (".solver", "SGDSolver"),
    "NesterovSolver": (".solver", "NesterovSolver"),
    "AdaGradSolver": (".solver", "AdaGradSolver"),
    "RMSPropSolver": (".solver", "RMSPropSolver"),
    "AdaDeltaSolver": (".solver", "AdaDeltaSolver"),
    "AdamSolver": (".solver", "AdamSolver"),
}


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'torchcaffe' has no attribute '{name}'") from None
    mod = _import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
