"""Global mode, as Caffe's ``Caffe`` singleton: phase constants, CPU/GPU mode, device and random seed."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from .proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

_state = {"mode": "cpu", "device_id": 0, "exact": True, "applied": None}


def set_mode_cpu() -> None:
    _state["mode"] = "cpu"


def set_mode_gpu() -> None:
    if not torch.cuda.is_available():
        raise RuntimeError("set_mode_gpu: no CUDA device is available to torch on this machine")
    _state["mode"] = "gpu"
    apply_cuda_math()


def set_exact_math(exact: bool = True) -> None:
    """Choose how float32 is computed on CUDA devices.

    ``exact=True`` (the default): what Caffe computes -- true float32 in cuDNN convolutions and cuBLAS
    matrix products (TF32 off; PyTorch's default lets cuDNN convolutions use TF32 on Ampere and newer GPUs,
    about 1e-3 relative error), cuDNN's deterministic algorithms without benchmark autotuning, and
    PyTorch's deterministic implementations wherever one exists (``warn_only``: an operation without one
    warns once and runs).  Two runs with the same seed then compute the same numbers.
    ``exact=False``: the fast path -- TF32 allowed, cuDNN picks the fastest (possibly non-deterministic)
    algorithms.  Nothing changes on the CPU."""
    _state["exact"] = bool(exact)
    _state["applied"] = None
    apply_cuda_math()


def exact_math() -> bool:
    """Whether CUDA computes Caffe-exact float32 (see :func:`set_exact_math`)."""
    return bool(_state["exact"])


def apply_cuda_math() -> None:
    """Apply the :func:`set_exact_math` choice to torch's global CUDA settings (done when a net or a solver is
    made on a CUDA device and by :func:`set_mode_gpu`; cheap when nothing changed)."""
    exact = bool(_state["exact"])
    if _state["applied"] == exact:
        return
    _state["applied"] = exact
    # the legacy switches: they set convolutions and RNNs together (torch >= 2.9 refuses a mix of APIs)
    torch.backends.cuda.matmul.allow_tf32 = not exact
    torch.backends.cudnn.allow_tf32 = not exact
    torch.backends.cudnn.deterministic = exact
    torch.backends.cudnn.benchmark = not exact
    if exact:
        # deterministic cuBLAS needs a fixed workspace; read when the first cuBLAS handle is made
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        import torch.utils.deterministic as _det

        _det.fill_uninitialized_memory = False  # Caffe does not fill fresh blobs either; only a slowdown
    except (ImportError, AttributeError):
        pass
    torch.use_deterministic_algorithms(exact, warn_only=True)


class DeviceError(RuntimeError):
    """A GPU was asked for that this machine does not have; the message is one line naming the flag."""


def check_gpus(ids, flag: str = "-gpu") -> None:
    """Raise :class:`DeviceError` unless every id in ``ids`` is a CUDA device torch can use here."""
    ids = [int(i) for i in ids]
    if not ids:
        return
    given = f"{flag} {','.join(map(str, ids))}"
    if not torch.cuda.is_available():
        raise DeviceError(f"{given}: no CUDA device is available to torch on this machine (CPU-only torch build "
                          f"or no GPU); run without {flag} to use the CPU")
    n = torch.cuda.device_count()
    bad = [i for i in ids if i < 0 or i >= n]
    if bad:
        raise DeviceError(f"{given}: device id(s) {bad} do not exist; this machine has {n} CUDA device(s) "
                          f"(0..{n - 1})")


def set_device(device_id: int) -> None:
    """Caffe's ``set_device``; :class:`DeviceError` (one line) when there is no such CUDA device."""
    check_gpus([device_id])
    _state["device_id"] = int(device_id)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(device_id))


def get_device() -> torch.device:
    """The torch device that new nets are created on."""
    if _state["mode"] == "gpu":
        return torch.device("cuda", _state["device_id"])
    return torch.device("cpu")


def set_random_seed(seed: int) -> None:
    """Seed every generator the runtime draws from (fillers, dropout, data shuffling and crops)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def init_log(level: int = 0) -> None:
    """pycaffe's ``caffe.init_log``: route runtime log lines (glog format) to stderr."""
    from . import glog

    glog.init(level)
