"""Input layers without a database: Input, DummyData, HDF5Data."""
from __future__ import annotations

import os
from typing import List

import numpy as np
import torch

from ..filler import FillerError, fill
from ..layer import Layer, register
from ..proto import caffe_pb2
from ._common import constant_filler

__all__ = ["InputLayer", "DummyDataLayer", "HDF5DataLayer"]


class _DataLayer(Layer):
    """No bottoms, no backward; tops are shaped at setup (Caffe's data layers have an empty Reshape)."""

    exact_bottoms = 0
    min_tops = 1

    def reshape(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False


@register("Input")
class InputLayer(_DataLayer):
    """Tops shaped by ``input_param.shape`` (once for all tops, once per top, or not at all); forward leaves
    the data as the caller set it."""

    def layer_setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.error(f"Must specify 'shape' once, once per top blob, or not at all: {len(top)} tops vs. "
                             f"{len(shapes)} shapes (input_param.shape)")
        for i, t in enumerate(top):
            if len(shapes):
                dims = shapes[0 if len(shapes) == 1 else i].dim
                if any(d < 0 for d in dims):
                    raise self.error(f"input_param.shape has a negative dimension: {list(dims)}")
                t.reshape(tuple(int(d) for d in dims))

    def forward(self, bottom, top):
        pass


@register("DummyData")
class DummyDataLayer(_DataLayer):
    """Tops of the given shapes (``shape``, or legacy num/channels/height/width, once or per top) filled by
    ``data_filler`` (none: constant 0; one for all tops; or one per top).  Constant fillers fill once at
    setup, the others refill on every forward, as Caffe."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        nt = len(top)
        nf = len(p.data_filler)
        if nf not in (0, 1, nt):
            raise self.error(f"Number of data fillers must be 0, 1 or equal to the number of tops: {nt} tops vs. "
                             f"{nf} data fillers (dummy_data_param.data_filler)")
        legacy = len(p.num)
        if len(p.shape) and legacy:
            raise self.error("Both shape and legacy fields were given (dummy_data_param)")
        if legacy:
            if not (len(p.channels) == len(p.height) == len(p.width) == legacy):
                raise self.error("Must specify the same number of num, channels, height and width "
                                 "(dummy_data_param)")
            if legacy not in (1, nt):
                raise self.error("Must specify either a single (legacy) shape or one for each top blob "
                                 "(dummy_data_param num/channels/height/width)")
        elif len(p.shape) not in (1, nt):
            raise self.error(f"Must specify either a single shape or one for each top blob: {nt} tops vs. "
                             f"{len(p.shape)} shapes (dummy_data_param.shape)")
        if nf <= 1:
            self.fillers = [p.data_filler[0] if nf else constant_filler(0.0)]
        else:
            self.fillers = list(p.data_filler)
        self.refill = [f.type != "constant" for f in self.fillers]
        for i, t in enumerate(top):
            if legacy:
                j = 0 if legacy == 1 else i
                shape = (p.num[j], p.channels[j], p.height[j], p.width[j])
            else:
                shape = tuple(p.shape[0 if len(p.shape) == 1 else i].dim)
            t.reshape(tuple(int(d) for d in shape))
        # the constant tops are filled once, now; the random ones on every forward
        self._fill(top, constant=True)

    def _fill(self, top, constant: bool) -> None:
        for i, t in enumerate(top):
            fid = i if len(self.fillers) > 1 else 0
            if self.refill[fid] != constant:
                try:
                    fill(t, self.fillers[fid])
                except FillerError as e:
                    raise self.error(f"data_filler: {e}") from None

    def forward(self, bottom, top):
        self._fill(top, constant=False)


@register("HDF5Data")
class HDF5DataLayer(_DataLayer):
    """Batches of ``batch_size`` rows from the HDF5 files listed in ``source`` (whitespace-separated paths,
    relative ones resolved against the working directory as Caffe does), one dataset per top, named after the
    top.  Rows run through a file, then the next file, wrapping around; with ``shuffle`` the file order is
    permuted at setup and at each wrap, and the row order of each file when loaded and when exhausted
    (a private NumPy generator seeded from the global one at setup).

    ``state()`` / ``set_state()`` record and restore the cursor (file position, row, permutations, generator)
    so a resumed run continues exactly; without a restored state the layer starts at the first row of its first
    file, as Caffe does after restoring a solverstate.

    ``solver_count`` / ``solver_rank`` (read from :mod:`torchcaffe.common` at setup: set_solver_count / set_solver_rank, else torch.distributed's world
    size and rank, 1 / 0 in a single process) implement Caffe's data-parallel row skipping in TRAIN: rank r keeps
    the rows whose running offset is r modulo solver_count.
    """

    solver_count = 1
    solver_rank = 0

    def layer_setup(self, bottom, top):
        from ..common import solver_count, solver_rank

        self.solver_count, self.solver_rank = solver_count(), solver_rank()
        if self.layer_param.HasField("transform_param"):
            raise self.error("HDF5Data does not transform data (remove transform_param)")
        p = self.layer_param.hdf5_data_param
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.error("hdf5_data_param.batch_size must be positive")
        self.shuffle = bool(p.shuffle)
        self.top_names = list(self.layer_param.top)
        if len(self.top_names) != len(top):
            self.top_names = [self.top_names[i] if i < len(self.top_names) else f"top{i}" for i in range(len(top))]
        src = p.source
        try:
            with open(src, "r") as f:
                self.filenames = f.read().split()
        except OSError as e:
            raise self.error(f"Failed to open source file: {src} ({e.strerror}; relative paths are resolved "
                             f"against the working directory {os.getcwd()})") from None
        if not self.filenames:
            raise self.error(f"Must have at least 1 HDF5 filename listed in {src}")
        self.num_files = len(self.filenames)
        self.rng = np.random.RandomState(np.random.randint(0, 2 ** 31 - 1)) if self.shuffle else None
        self.file_permutation = list(range(self.num_files))
        if self.shuffle:
            self.rng.shuffle(self.file_permutation)
        self.current_file = 0
        self._load(self.filenames[self.file_permutation[0]])
        self.current_row = 0
        self.offset = 0
        self.row_shapes = [tuple(a.shape[1:]) for a in self.data]
        for t, rs in zip(top, self.row_shapes):
            t.reshape((self.batch_size,) + rs)

    # -- file handling ---------------------------------------------------------------------------------------
    def _load(self, filename: str) -> None:
        import h5py

        try:
            f = h5py.File(filename, "r")
        except OSError as e:
            raise self.error(f"Failed opening HDF5 file: {filename} ({e})") from None
        with f:
            arrays = []
            for name in self.top_names:
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise self.error(f"Failed to find HDF5 dataset {name} in {filename}")
                a = np.asarray(f[name][...])
                if a.ndim < 1:
                    raise self.error(f"dataset {name} in {filename} must have at least 1 axis")
                if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                    raise self.error(f"dataset {name} in {filename} has the unsupported type {a.dtype}")
                arrays.append(a)
        n = arrays[0].shape[0]
        for name, a in zip(self.top_names, arrays):
            if a.shape[0] != n:
                raise self.error(f"dataset {name} in {filename} has {a.shape[0]} rows, {self.top_names[0]} has {n}")
        if hasattr(self, "row_shapes"):
            for name, a, rs in zip(self.top_names, arrays, self.row_shapes):
                if tuple(a.shape[1:]) != rs:
                    raise self.error(f"dataset {name} in {filename} has rows of shape {a.shape[1:]}, the first "
                                     f"file had {rs}")
        self.data = arrays
        self.loaded_file = filename
        self.data_permutation = list(range(n))
        if self.shuffle:
            self.rng.shuffle(self.data_permutation)

    def _next(self) -> None:
        self.current_row += 1
        if self.current_row == self.data[0].shape[0]:
            if self.num_files > 1:
                self.current_file += 1
                if self.current_file == self.num_files:
                    self.current_file = 0
                    if self.shuffle:
                        self.rng.shuffle(self.file_permutation)
                self._load(self.filenames[self.file_permutation[self.current_file]])
            self.current_row = 0
            if self.shuffle:
                self.rng.shuffle(self.data_permutation)
        self.offset += 1

    def _skip(self) -> bool:
        keep = (self.offset % self.solver_count) == self.solver_rank or self.phase == caffe_pb2.TEST
        return not keep

    def forward(self, bottom, top):
        rows: List[List[np.ndarray]] = [[] for _ in top]
        for _ in range(self.batch_size):
            while self._skip():
                self._next()
            r = self.data_permutation[self.current_row]
            for j in range(len(top)):
                rows[j].append(self.data[j][r])
            self._next()
        for j, t in enumerate(top):
            batch = np.stack(rows[j]).astype(np.float64 if t.dtype == torch.float64 else np.float32)
            t.data_t = torch.from_numpy(batch).to(device=t.device, dtype=t.dtype)

    # -- resumption ------------------------------------------------------------------------------------------
    def state(self):
        st = {"current_file": self.current_file, "current_row": self.current_row, "offset": self.offset,
              "file_permutation": list(self.file_permutation), "data_permutation": list(self.data_permutation)}
        if self.rng is not None:
            name, keys, pos, has_gauss, cached = self.rng.get_state()
            st["rng"] = [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]
        return st

    def set_state(self, state) -> None:
        if state is None:
            return
        perm = [int(i) for i in state["file_permutation"]]
        if sorted(perm) != list(range(self.num_files)):
            raise self.error("the saved HDF5Data state does not match this layer's file list")
        self.file_permutation = perm
        self.current_file = int(state["current_file"])
        fname = self.filenames[self.file_permutation[self.current_file]]
        if fname != getattr(self, "loaded_file", None):
            self._load(fname)
        dperm = [int(i) for i in state["data_permutation"]]
        if sorted(dperm) != list(range(self.data[0].shape[0])):
            raise self.error(f"the saved HDF5Data state does not match the rows of {fname}")
        self.data_permutation = dperm
        self.current_row = int(state["current_row"])
        self.offset = int(state["offset"])
        if self.rng is not None and state.get("rng") is not None:
            name, keys, pos, has_gauss, cached = state["rng"]
            self.rng.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
