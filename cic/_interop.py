"""numpy <-> torch interoperability for the public ``cic`` functions.

Every method in ``cic`` is written once, on torch tensors (any device). Functions decorated with
:func:`numpy_io` also accept numpy arrays: when the first argument is a ``numpy.ndarray``, every ndarray
argument is converted to a CPU tensor, the torch implementation runs, and tensor results are converted back to
numpy. There is no second (numpy) implementation of anything.
"""
from __future__ import annotations

import functools

import numpy as np
import torch


def to_tensor(x, device=None, dtype=None) -> torch.Tensor:
    """A tensor view of ``x`` (numpy arrays are shared where possible, copied when not writable)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else x
    arr = np.asarray(x)
    if not arr.flags.writeable or not arr.dtype.isnative or any(s < 0 for s in arr.strides):
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C")  # a copy torch can share
    t = torch.from_numpy(arr)
    return t.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else t


def to_numpy(x):
    """numpy array of a tensor (detached, moved to CPU); tuples/lists are converted element-wise."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, tuple):
        return tuple(to_numpy(v) for v in x)
    if isinstance(x, list):
        return [to_numpy(v) for v in x]
    return x


def numpy_io(fn):
    """Let a torch function take numpy arrays: numpy in (first argument) -> numpy out."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not args or not isinstance(args[0], np.ndarray):
            return fn(*args, **kwargs)
        args = tuple(to_tensor(a) if isinstance(a, np.ndarray) else a for a in args)
        kwargs = {k: (to_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
        return to_numpy(fn(*args, **kwargs))

    return wrapper
