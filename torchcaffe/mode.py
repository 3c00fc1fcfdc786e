"""Global mode, as Caffe's ``Caffe`` singleton: phase constants, CPU/GPU mode, device and random seed."""
from __future__ import annotations

import random

import numpy as np
import torch

from .proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

_state = {"mode": "cpu", "device_id": 0}


def set_mode_cpu() -> None:
    _state["mode"] = "cpu"


def set_mode_gpu() -> None:
    if not torch.cuda.is_available():
        raise RuntimeError("set_mode_gpu: no CUDA device is available to torch on this machine")
    _state["mode"] = "gpu"


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
