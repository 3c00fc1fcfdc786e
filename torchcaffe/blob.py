"""Blob: an N-d array with its gradient, as ``caffe::Blob``, held as torch tensors on one device.

A blob has two arrays of the same shape, ``data`` and ``diff``.  The runtime and the built-in layers work on
the tensors ``data_t`` / ``diff_t`` (on the net's device); pycaffe users see ``data`` / ``diff`` as writable
numpy arrays.  On the CPU the numpy array *is* the tensor's memory.  On a GPU the host copy is kept in step
as Caffe's SyncedMemory does: reading ``data`` copies device -> host once and marks the host copy as the
newest (the caller may write into it); the next ``data_t`` copies it back.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["Blob"]


class _Synced:
    """One array kept on a torch device with a lazily synchronised numpy mirror (Caffe's SyncedMemory)."""

    __slots__ = ("tensor_", "host", "head")

    def __init__(self, tensor: torch.Tensor):
        self.tensor_ = tensor
        self.host = None      # numpy mirror, only used off the CPU
        self.head = "device"  # "device": the tensor is newest; "host": the numpy mirror is newest

    def tensor(self) -> torch.Tensor:
        """The device tensor, current; the caller may modify it in place (Caffe's mutable_gpu_data), so the
        host mirror is re-read on the next ``numpy()``."""
        if self.head == "host":
            self.tensor_.copy_(torch.from_numpy(self.host))
        self.head = "device"
        return self.tensor_

    def set_tensor(self, t: torch.Tensor) -> None:
        self.tensor_ = t
        self.host = None
        self.head = "device"

    def numpy(self) -> np.ndarray:
        t = self.tensor_
        if t.device.type == "cpu":
            return t.numpy()
        if self.head == "device" or self.host is None or self.host.shape != tuple(t.shape):
            self.host = t.detach().cpu().numpy()
        self.head = "host"  # the caller may write into the mirror
        return self.host


class _View:
    """Another array's memory under another shape of the same count: Caffe's ShareData / ShareDiff between
    blobs of different shapes (Reshape, Flatten).  Reads and writes go to the base array."""

    __slots__ = ("base", "shape")

    def __init__(self, base, shape: tuple):
        while isinstance(base, _View):
            base = base.base
        self.base = base
        self.shape = tuple(shape)

    def _own(self) -> None:
        """When the base was resized to another count, this array keeps memory of its own (zeros), as a Caffe
        blob keeps the old memory its sharer let go of."""
        t = self.base.tensor_
        if t.numel() != int(np.prod(self.shape, dtype=np.int64)):
            self.base = _Synced(t.new_zeros(self.shape))

    @property
    def tensor_(self) -> torch.Tensor:
        self._own()
        return self.base.tensor_.reshape(self.shape)

    def tensor(self) -> torch.Tensor:
        self._own()
        t = self.base.tensor()
        if not t.is_contiguous():  # keep the base one block of memory, so that the view is a view
            t = t.contiguous()
            self.base.set_tensor(t)
        return t.view(self.shape)

    def set_tensor(self, t: torch.Tensor) -> None:
        self._own()
        self.base.set_tensor(t.reshape(self.base.tensor_.shape))

    def numpy(self) -> np.ndarray:
        self.tensor()
        return self.base.numpy().reshape(self.shape)


def _as_shape(args) -> tuple:
    if len(args) == 1 and not isinstance(args[0], (int, np.integer)):
        args = tuple(args[0])
    shape = tuple(int(d) for d in args)
    if any(d < 0 for d in shape):
        raise ValueError(f"blob dimensions must be non-negative, got {shape}")
    return shape


class Blob:
    """A named-less N-d array pair (data, diff) in float32 on ``device``."""

    def __init__(self, shape=(), device="cpu", dtype=torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        shape = _as_shape((shape,)) if not isinstance(shape, tuple) else _as_shape(shape)
        self._data = _Synced(torch.zeros(shape, dtype=dtype, device=self.device))
        self._diff = _Synced(torch.zeros(shape, dtype=dtype, device=self.device))

    # -- shape ------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self._data.tensor_.shape)

    @property
    def count(self) -> int:
        return int(self._data.tensor_.numel())

    @property
    def num_axes(self) -> int:
        return self._data.tensor_.dim()

    def _legacy(self, i: int) -> int:
        s = self.shape
        if len(s) > 4:
            raise ValueError(f"legacy dimension accessors need a blob of at most 4 axes, shape is {s}")
        s = s + (1,) * (4 - len(s))
        return s[i]

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape) -> None:
        """Change the shape; the contents are kept when the element count is unchanged, else zeroed."""
        shape = _as_shape(shape)
        if shape == self.shape:
            return
        n = int(np.prod(shape, dtype=np.int64))
        for name in ("_data", "_diff"):
            s = getattr(self, name)
            if isinstance(s, _View):  # shared memory: keep sharing at the same count, else own new memory
                if s.base.tensor_.numel() == n:
                    s.shape = shape
                else:
                    setattr(self, name, _Synced(torch.zeros(shape, dtype=self.dtype, device=self.device)))
                continue
            t = s.tensor()
            if t.numel() == int(np.prod(shape, dtype=np.int64)):
                s.set_tensor(t.reshape(shape).contiguous())
            else:
                s.set_tensor(torch.zeros(shape, dtype=self.dtype, device=self.device))

    def reshape_like(self, other: "Blob") -> None:
        self.reshape(other.shape)

    # -- tensors (runtime side) ---------------------------------------------------------------------------
    @property
    def data_t(self) -> torch.Tensor:
        return self._data.tensor()

    @data_t.setter
    def data_t(self, t: torch.Tensor) -> None:
        self.set_data(t)

    @property
    def diff_t(self) -> torch.Tensor:
        return self._diff.tensor()

    @diff_t.setter
    def diff_t(self, t: torch.Tensor) -> None:
        t = self._coerce(t)
        if tuple(t.shape) != self.shape:
            t = t.reshape(self.shape)
        self._diff.set_tensor(t)

    def _coerce(self, t) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(np.asarray(t))
        if t.dtype != self.dtype or t.device != self.device:
            t = t.to(device=self.device, dtype=self.dtype)
        return t

    def set_data(self, t: torch.Tensor) -> None:
        """Replace the data (any shape); the diff follows the new shape (zeroed if it changed)."""
        t = self._coerce(t)
        if isinstance(self._data, _View) and tuple(t.shape) != self._data.shape:
            self._data = _Synced(t)  # another shape: the blob stops sharing (Caffe would reallocate)
        else:
            self._data.set_tensor(t)
        if tuple(self._diff.tensor_.shape) != tuple(t.shape):
            self._diff.set_tensor(torch.zeros_like(t))

    def share_data(self, other: "Blob") -> None:
        self._data = other._data

    def share_diff(self, other: "Blob") -> None:
        self._diff = other._diff

    def share_data_view(self, other: "Blob") -> None:
        """Use ``other``'s data memory under this blob's shape (same count), as Caffe's ShareData between
        blobs of different shapes."""
        if other.count != self.count:
            raise ValueError(f"cannot share data between blobs of {other.count} and {self.count} elements")
        self._data = _View(other._data, self.shape)

    def share_diff_view(self, other: "Blob") -> None:
        """Use ``other``'s diff memory under this blob's shape (same count), as Caffe's ShareDiff."""
        if other.count != self.count:
            raise ValueError(f"cannot share diffs between blobs of {other.count} and {self.count} elements")
        self._diff = _View(other._diff, self.shape)

    def zero_diff(self) -> None:
        self._diff.set_tensor(torch.zeros(self.shape, dtype=self.dtype, device=self.device))

    def to(self, device) -> "Blob":
        """Move both arrays to ``device`` (in place); returns self."""
        device = torch.device(device)
        self.device = device
        for s in (self._data, self._diff):
            s.set_tensor(s.tensor().to(device))
        return self

    # -- numpy (pycaffe side) -----------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        return self._data.numpy()

    @data.setter
    def data(self, value) -> None:
        self.data[...] = value

    @property
    def diff(self) -> np.ndarray:
        return self._diff.numpy()

    @diff.setter
    def diff(self, value) -> None:
        self.diff[...] = value

    def __repr__(self) -> str:
        return f"Blob(shape={self.shape}, device={self.device})"
