"""The ``HDF5Output`` layer: writes its two bottoms to an HDF5 file, as BVLC Caffe 1.0 does."""
from __future__ import annotations

import numpy as np
import torch

from ..layer import Layer, register

__all__ = ["HDF5OutputLayer"]


def _legacy_shape(layer, blob, which: str):
    s = tuple(blob.shape)
    if len(s) > 4:
        raise layer.error(f"{which} has shape {s}; HDF5Output writes blobs of at most 4 axes "
                          f"(num, channels, height, width)")
    return s + (1,) * (4 - len(s)) if len(s) else (1, 1, 1, 1)


@register("HDF5Output")
class HDF5OutputLayer(Layer):
    """Bottoms ``data`` and ``label`` (same num); no tops, no backward.

    Setup creates (truncates) ``hdf5_output_param.file_name`` as an empty HDF5 file; the forward pass writes
    the datasets ``data`` and ``label`` (float32, each bottom in its legacy 4-D shape num x channels x height x
    width, e.g. an (N, C) bottom becomes N x C x 1 x 1).  As in BVLC Caffe a file holds one batch: a second
    forward pass is an error (Caffe fails with "Failed to make float dataset data").  Each write goes to a
    temporary file beside the target, renamed over it once complete, so the file is never half-written.
    """

    exact_bottoms = 2
    exact_tops = 0

    def layer_setup(self, bottom, top):
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name is not set")
        self.written = False
        self._write({})

    def _write(self, datasets) -> None:
        import h5py

        from ..protoio import atomic_write

        try:
            with atomic_write(self.file_name, "w+b") as fobj:
                with h5py.File(fobj, "w") as h5:
                    for name, arr in datasets.items():
                        h5.create_dataset(name, data=arr)
        except OSError as e:
            raise self.error(f"Failed to open HDF5 file {self.file_name} ({e})") from None

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        d = _legacy_shape(self, bottom[0], "bottom[0] (data)")
        lab = _legacy_shape(self, bottom[1], "bottom[1] (label)")
        if d[0] != lab[0]:
            raise self.error(f"data blob and label blob must have the same batch size: {d[0]} vs. {lab[0]}")
        if self.written:
            raise self.error(f"'{self.file_name}' already holds this layer's batch: HDF5Output writes one batch "
                             f"per file (BVLC Caffe fails the same way: Failed to make float dataset data)")
        data = bottom[0].data_t.detach().to("cpu", dtype=torch.float32).numpy().reshape(d)
        label = bottom[1].data_t.detach().to("cpu", dtype=torch.float32).numpy().reshape(lab)
        self._write({"data": np.ascontiguousarray(data), "label": np.ascontiguousarray(label)})
        self.written = True

    def backward(self, top, propagate_down, bottom):
        pass
