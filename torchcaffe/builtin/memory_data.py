"""The ``MemoryData`` layer: batches from arrays held in memory (pycaffe's ``Net.set_input_arrays``)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .. import glog
from ..data_transformer import DataTransformer, TransformError
from ..layer import Layer, register
from .data import batch_generator

__all__ = ["MemoryDataLayer"]


@register("MemoryData")
class MemoryDataLayer(Layer):
    """BVLC Caffe's MemoryDataLayer.

    ``memory_data_param``: ``batch_size``, ``channels``, ``height``, ``width`` (all positive).  Tops: data
    (batch_size, channels, height, width) and labels -- (batch_size,) after setup, (batch_size, 1, 1, 1) after
    each forward pass, as in Caffe.  :meth:`reset` (what ``Net.set_input_arrays`` calls) hands over float32
    arrays of n items (n a multiple of batch_size); each forward pass then returns the next batch_size items,
    wrapping around after n.  Like Caffe the layer keeps the caller's arrays, not a copy: later changes to them
    show in later batches.  Arrays given to :meth:`reset` are not transformed (with a ``transform_param``
    Caffe warns so); :meth:`add_datum_vector` and :meth:`add_mat_vector` (Caffe's AddDatumVector /
    AddMatVector) apply ``transform_param``.
    """

    exact_bottoms = 0
    exact_tops = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        self.batch_size, self.channels = int(p.batch_size), int(p.channels)
        self.height, self.width = int(p.height), int(p.width)
        if self.batch_size <= 0 or self.channels * self.height * self.width <= 0:
            raise self.error("batch_size, channels, height, and width must be specified and positive in "
                             "memory_data_param")
        top[0].reshape((self.batch_size, self.channels, self.height, self.width))
        top[1].reshape((self.batch_size,))
        self.data: Optional[np.ndarray] = None
        self.labels: Optional[np.ndarray] = None
        self.n = 0
        self.pos = 0
        self.has_new_data = False
        self._transformer: Optional[DataTransformer] = None
        self._transforms = 0

    def reshape(self, bottom, top):
        pass

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    # -- feeding ----------------------------------------------------------------------------------------------
    def reset(self, data: np.ndarray, labels: np.ndarray, n: int) -> None:
        """Caffe's MemoryDataLayer::Reset: serve ``n`` items of ``data`` (n x C x H x W float32) and ``labels``
        (n values, float32), batch by batch, from the first."""
        if data is None or labels is None:
            raise self.error("reset needs a data and a labels array")
        if n % self.batch_size != 0:
            raise self.error(f"n must be a multiple of batch size: n = {n}, batch_size = {self.batch_size}")
        if self.layer_param.HasField("transform_param"):
            glog.warning(f"{self.type} does not transform array data on Reset()", src="memory_data_layer.cpp:83")
        self.data, self.labels, self.n, self.pos = data, labels, int(n), 0

    def set_batch_size(self, new_size: int) -> None:
        """Caffe's set_batch_size."""
        if self.has_new_data:
            raise self.error("Can't change batch_size until current data has been consumed.")
        if int(new_size) <= 0:
            raise self.error(f"batch size must be positive, got {new_size}")
        self.batch_size = int(new_size)

    def _transformer_for(self) -> DataTransformer:
        if self._transformer is None:
            try:
                self._transformer = DataTransformer(self.layer_param.transform_param, self.phase)
            except TransformError as e:
                raise self.error(f"transform_param: {e}") from None
        return self._transformer

    def _add(self, images: Sequence[np.ndarray], labels: Sequence[float], what: str) -> None:
        if self.has_new_data:
            raise self.error(f"Can't add {what} until current data has been consumed.")
        num = len(images)
        if num == 0:
            raise self.error(f"There is no {what} to add.")
        if num % self.batch_size != 0:
            raise self.error(f"The added data must be a multiple of the batch size ({num} items, batch_size "
                             f"{self.batch_size}).")
        tr = self._transformer_for()
        want = (self.channels, self.height, self.width)
        try:
            for i, im in enumerate(images):
                got = tr.output_shape(im.shape)
                if got != want:
                    raise TransformError(f"item {i} of shape {tuple(im.shape)} transforms to {got}; the layer "
                                         f"produces {want}")
            seed = int(torch.initial_seed()) & (2 ** 63 - 1)
            rng = batch_generator(seed, 0, self._transforms) if tr.needs_rand else None
            data = tr.transform(list(images), rng)
        except TransformError as e:
            raise self.error(str(e)) from None
        self._transforms += 1
        lab = np.asarray(labels, dtype=np.float32).reshape(num, 1, 1, 1)
        self.data, self.labels, self.n, self.pos = data, lab, num, 0
        self.has_new_data = True

    def add_datum_vector(self, datums) -> None:
        """Caffe's AddDatumVector: transform Datums (``transform_param``) and serve them with their labels."""
        tr = self._transformer_for()
        try:
            images = [tr.decode(d) for d in datums]
        except TransformError as e:
            raise self.error(str(e)) from None
        self._add(images, [d.label for d in datums], "data")

    def add_mat_vector(self, mats, labels) -> None:
        """Caffe's AddMatVector: images as OpenCV gives them (H x W x C, or H x W), and their labels."""
        if len(mats) != len(labels):
            raise self.error(f"{len(mats)} images but {len(labels)} labels")
        images = []
        for m in mats:
            m = np.asarray(m)
            images.append(np.ascontiguousarray((m[:, :, None] if m.ndim == 2 else m).transpose(2, 0, 1)))
        self._add(images, labels, "mat")

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, bottom, top):
        if self.data is None:
            raise self.error("MemoryDataLayer needs to be initialized by calling Reset (pycaffe: "
                             "net.set_input_arrays(data, labels))")
        b, p = self.batch_size, self.pos
        data = torch.from_numpy(self.data.reshape(self.n, -1)[p:p + b].reshape(
            b, self.channels, self.height, self.width))
        label = torch.from_numpy(self.labels.reshape(self.n)[p:p + b].reshape(b, 1, 1, 1))
        top[0].data_t = data.to(self.device) if self.device.type != "cpu" else data
        top[1].data_t = label.to(self.device) if self.device.type != "cpu" else label
        self.pos = (p + b) % self.n
        if self.pos == 0:
            self.has_new_data = False
