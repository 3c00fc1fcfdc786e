"""Blob: an N-d array with its gradient, as ``caffe::Blob``, held as torch tensors on one device.

A blob has two arrays of the same shape, ``data`` and ``diff``.  Each is one tensor that the blob owns for
as long as its shape stays the same.  ``blob.data_t = t`` adopts ``t`` as that memory (no copy) unless a
pycaffe user holds a numpy view of it; then ``t`` is copied into it, so what the user holds stays valid
across forward, backward, solver updates and so on, until the blob is reshaped -- as in Caffe.  A blob may
also be another blob's memory under another shape (:meth:`Blob.share_data_view`, Caffe's ShareData between
blobs of different shapes: Reshape, Flatten).

pycaffe users see ``data`` / ``diff`` as writable numpy arrays.  On the CPU the numpy array *is* the
tensor's memory.  On a GPU a host mirror is kept as Caffe's SyncedMemory keeps one, with its three states:
``HEAD_AT_CPU`` (the host copy is newer: the caller may have written into it), ``HEAD_AT_GPU`` (the device
copy is newer) and ``SYNCED``.  Writes made on the device (in place, by a layer or the solver) are noticed
through torch's version counter of the tensor, so a read that only reads keeps both copies in step and
moves no data twice.  Host arrays that a user holds stay live on a GPU too: the net brings them in step at
the start and end of each of its operations (:func:`sync_exposed_before`, :func:`sync_exposed_after`).
"""
from __future__ import annotations

import weakref

import numpy as np
import torch

__all__ = ["Blob", "HEAD_AT_CPU", "HEAD_AT_GPU", "SYNCED"]

HEAD_AT_CPU = "HEAD_AT_CPU"
HEAD_AT_GPU = "HEAD_AT_GPU"
SYNCED = "SYNCED"

#: keep a host mirror for CPU tensors too (tests set it to run the device path, and count its transfers,
#: on a machine without a GPU)
MIRROR_CPU = False

#: device arrays whose host mirror a user has been handed (only off the CPU): kept in step around net calls
_EXPOSED: "weakref.WeakSet[_Synced]" = weakref.WeakSet()


#: every blob's memory, by address: a tensor whose memory a blob already has is copied, never adopted
_OWNERS: "weakref.WeakValueDictionary[int, torch.Tensor]" = weakref.WeakValueDictionary()


def _own(t: torch.Tensor) -> None:
    ptr = t.data_ptr()
    if ptr:
        _OWNERS[ptr] = t


def _owner(t: torch.Tensor):
    ptr = t.data_ptr()
    return _OWNERS.get(ptr) if ptr else None


def _download(dst: np.ndarray, src: torch.Tensor) -> None:
    """Device -> host copy (one function, so that tests can count transfers)."""
    torch.from_numpy(dst).copy_(src.detach())


def _copy_into(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """A full copy of an array into a blob's memory (one function, so that tests can count them)."""
    with torch.no_grad():
        return dst.copy_(src)


def _upload(dst: torch.Tensor, src: np.ndarray) -> None:
    """Host -> device copy."""
    with torch.no_grad():
        dst.copy_(torch.from_numpy(src))


class _Synced:
    """One array: a device tensor the blob owns, with a lazily synchronised numpy mirror (SyncedMemory).

    The tensor is replaced, not written into, by whoever sets the whole array (a layer's output is adopted
    without a copy), unless a numpy view of its memory has been handed out (``exposed``, on the CPU only):
    then every write goes into that memory, so that the view stays live.  A mirrored array (on a device)
    never hands out its tensor's memory, so it always adopts.
    """

    __slots__ = ("tensor_", "host", "head", "version", "mirrored", "exposed", "owned", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.set_tensor(tensor)

    def set_tensor(self, t: torch.Tensor) -> None:
        """Take ``t`` as the (new) storage: a reshape or a move; host arrays handed out before are dropped."""
        self.tensor_ = t
        self.host = None
        self.head = HEAD_AT_GPU
        self.version = -1
        self.mirrored = t.device.type != "cpu" or MIRROR_CPU  # else the numpy array is the tensor's memory
        self.exposed = False
        self.owned = True  # the memory is the blob's alone (not also an array someone else computed)
        _own(t)

    def _adopt(self, t: torch.Tensor, owned: bool) -> None:
        """Replace the memory by ``t`` (same shape): what a held host mirror had is now older."""
        self.tensor_ = t
        self.head = HEAD_AT_GPU
        self.owned = owned
        _own(t)

    # -- state ---------------------------------------------------------------------------------------------
    def device_newer(self) -> bool:
        """Has the device copy changed since the host mirror was last in step?"""
        if self.head == HEAD_AT_GPU:
            return True
        return self.head == SYNCED and self.tensor_._version != self.version

    def _mark_synced(self) -> None:
        self.head = SYNCED
        self.version = self.tensor_._version

    def _host_buffer(self) -> np.ndarray:
        t = self.tensor_
        if self.host is None or self.host.shape != tuple(t.shape):
            dtype = torch.empty((), dtype=t.dtype).numpy().dtype
            self.host = np.empty(tuple(t.shape), dtype=dtype)
        return self.host

    # -- device side ---------------------------------------------------------------------------------------
    def tensor(self) -> torch.Tensor:
        """The device tensor, current (Caffe's gpu_data / mutable_gpu_data: in-place writes are seen through
        the tensor's version counter)."""
        if self.head == HEAD_AT_CPU:
            _upload(self.tensor_, self.host)
            self._mark_synced()
        return self.tensor_

    def write(self, t: torch.Tensor, given: torch.Tensor = None) -> None:
        """Set the whole array to ``t`` (same shape): adopt it, or copy it into the memory a view shows.
        ``given``: the tensor that ``t`` reshapes, when a ``_View`` writes; whether ``t`` may be adopted is
        decided on it (a whole tensor of its own, not a view of another)."""
        dst = self.tensor_
        if t is dst or (t.data_ptr() == dst.data_ptr() and t.shape == dst.shape and t.stride() == dst.stride()
                        and t.dtype == dst.dtype and t.device == dst.device):
            return  # the caller wrote into the blob's own memory
        t = t.detach()
        if self.exposed:
            _copy_into(dst, t)
            if self.head == HEAD_AT_CPU:
                self.head = HEAD_AT_GPU
            return
        src = t if given is None else given
        if t.dtype == dst.dtype and t.device == dst.device and src.is_contiguous() and src._base is None \
                and _owner(src) is None:
            self._adopt(t, owned=False)
        else:  # a view, another blob's memory, another type or device: a copy of our own
            self._adopt(_copy_into(torch.empty_like(dst, memory_format=torch.contiguous_format), t), owned=True)

    def zero(self) -> None:
        if self.exposed:
            with torch.no_grad():
                self.tensor_.zero_()
            if self.head == HEAD_AT_CPU:
                self.head = HEAD_AT_GPU
        else:
            self._adopt(torch.zeros_like(self.tensor_), owned=True)

    # -- host side -----------------------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The host array, current and writable (pycaffe's ``blob.data``, Caffe's mutable_cpu_data)."""
        t = self.tensor_
        if not self.mirrored:
            if not self.exposed:
                # from now on the user holds this memory and every write goes into it: it must be the
                # blob's alone (an adopted layer output may also be saved by that layer's autograd graph)
                if not self.owned:
                    t = _copy_into(torch.empty_like(t, memory_format=torch.contiguous_format), t)
                    self._adopt(t, owned=True)
                self.exposed = True
            return t.numpy()
        host = self._host_buffer()
        if self.device_newer():
            _download(host, t)
        self.head = HEAD_AT_CPU
        _EXPOSED.add(self)
        return host

    def read(self) -> np.ndarray:
        """The host array for reading only (Caffe's cpu_data): both copies end up in step, nothing is
        uploaded later for it.  The caller must not write into it."""
        t = self.tensor_
        if not self.mirrored:
            return t.detach().numpy()
        host = self._host_buffer()
        if self.device_newer():
            _download(host, t)
            self._mark_synced()
        return host

    def assign(self, value) -> None:
        """Overwrite the whole array from the host (``blob.data = value``): no download first."""
        t = self.tensor_
        if not self.mirrored:
            if not self.exposed:
                t = torch.empty_like(t, memory_format=torch.contiguous_format)
                t.numpy()[...] = value
                self._adopt(t, owned=True)
            else:
                t.numpy()[...] = value
            return
        host = self._host_buffer()
        host[...] = value
        self.head = HEAD_AT_CPU

    # -- keeping held host arrays live on a device -----------------------------------------------------------
    def before_op(self) -> None:
        """The user may have written into the host array since the last call: it is the newest copy."""
        if self.host is not None and not self.device_newer():
            self.head = HEAD_AT_CPU

    def after_op(self) -> None:
        """Bring the host array in step with what the operation computed."""
        if self.host is not None and self.device_newer():
            _download(self.host, self.tensor_)
            self._mark_synced()


def sync_exposed_before() -> None:
    """Before a net operation: host arrays handed to the user (on a device) are taken as the newest copy."""
    for s in list(_EXPOSED):
        s.before_op()


def sync_exposed_after() -> None:
    """After a net operation: host arrays handed to the user (on a device) are brought up to date."""
    for s in list(_EXPOSED):
        s.after_op()


class _View:
    """Another array's memory under another shape of the same count: Caffe's ShareData / ShareDiff between
    blobs of different shapes (Reshape, Flatten, one-bottom Concat, one-top Slice).  Every operation goes to
    the base ``_Synced`` (its memory, host mirror, SyncedMemory state and whether a user holds it), with the
    array seen under this view's shape; so a write through either blob, an adopted tensor included, is seen
    by both, and numpy arrays of either stay live as the base's do."""

    __slots__ = ("base", "shape")

    def __init__(self, base, shape: tuple):
        while isinstance(base, _View):
            base = base.base
        self.base = base
        self.shape = tuple(shape)

    def _own(self) -> "_Synced":
        """The base; when it was resized to another count, this array first takes memory of its own (zeros),
        as a Caffe blob keeps the old memory its sharer let go of."""
        t = self.base.tensor_
        if t.numel() != int(np.prod(self.shape, dtype=np.int64)):
            self.base = _Synced(t.new_zeros(self.shape))
        return self.base

    def _base_shape(self, a):
        return a.reshape(tuple(self._own().tensor_.shape))

    # -- state: the base's ---------------------------------------------------------------------------------
    @property
    def tensor_(self) -> torch.Tensor:
        return self._own().tensor_.reshape(self.shape)

    exposed = property(lambda self: self._own().exposed)
    mirrored = property(lambda self: self._own().mirrored)
    owned = property(lambda self: self._own().owned)
    head = property(lambda self: self._own().head)

    def device_newer(self) -> bool:
        return self._own().device_newer()

    # -- device side ---------------------------------------------------------------------------------------
    def tensor(self) -> torch.Tensor:
        base = self._own()
        t = base.tensor()
        if not t.is_contiguous():  # keep the base one block of memory, so that the view is a view
            base.write(t.contiguous())
            t = base.tensor()
        return t.view(self.shape)

    def write(self, t: torch.Tensor) -> None:
        t = t.detach()
        self._own().write(self._base_shape(t), given=t)

    def zero(self) -> None:
        self._own().zero()

    def set_tensor(self, t: torch.Tensor) -> None:
        self._own().set_tensor(self._base_shape(t))

    # -- host side -----------------------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        return self._own().numpy().reshape(self.shape)

    def read(self) -> np.ndarray:
        return self._own().read().reshape(self.shape)

    def assign(self, value) -> None:
        base = self._own()
        dtype = torch.empty((), dtype=base.tensor_.dtype).numpy().dtype
        value = np.broadcast_to(np.asarray(value, dtype=dtype), self.shape)
        base.assign(value.reshape(tuple(base.tensor_.shape)))

    def before_op(self) -> None:
        self._own().before_op()

    def after_op(self) -> None:
        self._own().after_op()


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
        """Change the shape; the contents are kept when the element count is unchanged, else zeroed.
        Arrays taken from the blob before a reshape that changes its shape no longer follow it."""
        shape = _as_shape(shape)
        if shape == self.shape and shape == tuple(self._diff.tensor_.shape):
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
            if s.tensor_.shape == shape:
                continue  # shared with a blob already reshaped (Split tops share their bottom's data)
            if s.tensor_.numel() == n:
                owned = s.owned
                s.set_tensor(s.tensor().reshape(shape))
                s.owned = owned  # still the same memory
            else:
                s.set_tensor(torch.zeros(shape, dtype=self.dtype, device=self.device))

    def reshape_like(self, other: "Blob") -> None:
        self.reshape(other.shape)

    # -- tensors (runtime side) ---------------------------------------------------------------------------
    @property
    def data_t(self) -> torch.Tensor:
        """The data as a tensor on the blob's device: the blob's own memory (writes into it are the blob's)."""
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
        self._diff.write(t)

    def _coerce(self, t) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(np.asarray(t))
        return t

    def set_data(self, t: torch.Tensor) -> None:
        """Write ``t`` into the data; a different shape reshapes the blob first (the diff follows it)."""
        t = self._coerce(t)
        if tuple(t.shape) != self.shape:
            self.reshape(tuple(t.shape))
        self._data.write(t)

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
        self._diff.zero()

    def to(self, device) -> "Blob":
        """Move both arrays to ``device`` (in place); returns self."""
        device = torch.device(device)
        self.device = device
        for s in (self._data, self._diff):
            if s.tensor_.device != device:
                s.set_tensor(s.tensor().to(device))
        return self

    # -- numpy (pycaffe side) -----------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        return self._data.numpy()

    @data.setter
    def data(self, value) -> None:
        self._data.assign(value)

    @property
    def diff(self) -> np.ndarray:
        return self._diff.numpy()

    @diff.setter
    def diff(self, value) -> None:
        self._diff.assign(value)

    def read_data(self) -> np.ndarray:
        """The data on the host for reading only (snapshots, weight files): no re-upload follows."""
        return self._data.read()

    def read_diff(self) -> np.ndarray:
        return self._diff.read()

    def __repr__(self) -> str:
        return f"Blob(shape={self.shape}, device={self.device})"
