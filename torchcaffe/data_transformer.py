"""Caffe's DataTransformer: crop, mirror, mean subtraction and scaling of Datum images.

What BVLC Caffe 1.0's ``DataTransformer<Dtype>::Transform`` does, item by item:

1. decode: a raw Datum holds ``channels x height x width`` bytes (CHW, BGR for colour images) or, when
   ``data`` is empty, the same count of ``float_data``; an encoded Datum (``encoded: true``) holds an image
   file that OpenCV decodes -- ``force_color`` (``IMREAD_COLOR``) / ``force_gray`` (``IMREAD_GRAYSCALE``) as
   ``DecodeDatumToCVMat``, otherwise ``IMREAD_UNCHANGED`` as ``DecodeDatumToCVMatNative``;
2. crop offsets: with ``crop_size`` > 0, a uniformly random ``h_off`` in ``[0, H - crop]`` and ``w_off`` in
   ``[0, W - crop]`` in phase TRAIN, the centre ``((H - crop) / 2, (W - crop) / 2)`` (integer division) in
   phase TEST;
3. mirror: with ``mirror: true``, each item is flipped left-right with probability 1/2 -- in *both* phases,
   as Caffe's ``param_.mirror() && Rand(2)`` does (Caffe checks the phase only for the crop);
4. value: ``(pixel - mean) * scale`` in float32, where ``mean`` is the per-channel ``mean_value`` (one value
   is repeated over the channels) or the ``mean_file`` BlobProto of the full datum size, cropped with the
   same offsets as the image (the mean is indexed before mirroring, as in Caffe); without a mean,
   ``pixel * scale``.

Random draws come from a ``numpy.random.Generator`` the caller passes in (the Data layer derives one per
batch from the run's seed), so a batch is a pure function of its records and its generator.  Caffe's own
random numbers (boost's mt19937 behind ``caffe_rng_rand``) are not reproduced: the offsets follow the same
distribution, not the same sequence.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .proto import caffe_pb2

__all__ = ["DataTransformer", "TransformError", "decode_datum", "datum_to_array"]

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


class TransformError(ValueError):
    """A Datum or parameter the transformer cannot use (the message says which and why)."""


def decode_datum(datum: "caffe_pb2.Datum", force_color: bool = False, force_gray: bool = False) -> np.ndarray:
    """The image of one Datum as a CHW array: uint8 for byte data and encoded images, float32 for float_data.

    Encoded Datums are decoded with OpenCV as Caffe's ``DecodeDatumToCVMat`` / ``DecodeDatumToCVMatNative``
    do; a single-channel image gives a ``(1, H, W)`` array.
    """
    if force_color and force_gray:
        raise TransformError("cannot set both force_color and force_gray")
    if datum.encoded:
        import cv2

        buf = np.frombuffer(datum.data, dtype=np.uint8)
        flag = cv2.IMREAD_COLOR if force_color else (cv2.IMREAD_GRAYSCALE if force_gray else cv2.IMREAD_UNCHANGED)
        img = cv2.imdecode(buf, flag) if buf.size else None
        if img is None:
            raise TransformError(f"could not decode the encoded datum ({len(datum.data)} bytes)")
        if img.ndim == 2:
            img = img[:, :, None]
        if img.dtype != np.uint8 and img.dtype != np.float32:
            raise TransformError(f"decoded image has depth {img.dtype}; Caffe accepts 8-bit or float images only")
        return np.ascontiguousarray(img.transpose(2, 0, 1))
    c, h, w = int(datum.channels), int(datum.height), int(datum.width)
    if c <= 0 or h <= 0 or w <= 0:
        raise TransformError(f"raw datum has shape {c}x{h}x{w}; channels, height and width must be positive")
    n = c * h * w
    if len(datum.data):
        if len(datum.data) != n:
            raise TransformError(f"raw datum holds {len(datum.data)} bytes, its shape {c}x{h}x{w} needs {n}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(c, h, w)
    if len(datum.float_data) != n:
        raise TransformError(f"raw datum holds {len(datum.float_data)} float_data values, its shape {c}x{h}x{w} "
                             f"needs {n}")
    return np.asarray(datum.float_data, dtype=np.float32).reshape(c, h, w)


def datum_to_array(datum: "caffe_pb2.Datum") -> np.ndarray:
    """pycaffe's ``caffe.io.datum_to_array`` for raw Datums (CHW)."""
    return decode_datum(datum)


def _load_mean_file(path: str) -> np.ndarray:
    from .protoio import proto_to_array, read_binaryproto

    if not os.path.exists(path):
        raise TransformError(f"mean_file '{path}' does not exist (resolved to {os.path.abspath(path)}; "
                             f"relative paths are taken from the working directory {os.getcwd()})")
    bp = read_binaryproto(path, caffe_pb2.BlobProto)
    arr = proto_to_array(bp)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise TransformError(f"mean_file '{path}' has shape {arr.shape}; expected one image (1 x C x H x W)")
        arr = arr[0]
    if arr.ndim != 3:
        raise TransformError(f"mean_file '{path}' has shape {arr.shape}; expected C x H x W")
    return np.ascontiguousarray(arr, dtype=np.float32)


class DataTransformer:
    """Caffe's DataTransformer for one ``TransformationParameter`` and phase."""

    def __init__(self, param: "caffe_pb2.TransformationParameter", phase: int):
        self.param = param
        self.phase = int(phase)
        self.crop_size = int(param.crop_size)
        self.mirror = bool(param.mirror)
        self.scale = np.float32(param.scale)
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        if self.force_color and self.force_gray:
            raise TransformError("cannot set both force_color and force_gray")
        has_mean_file = param.HasField("mean_file")
        if has_mean_file and len(param.mean_value):
            raise TransformError("cannot specify mean_file and mean_value at the same time")
        self.mean_file: Optional[np.ndarray] = _load_mean_file(param.mean_file) if has_mean_file else None
        self.mean_values: List[float] = [float(v) for v in param.mean_value]

    # -- shapes ---------------------------------------------------------------------------------------------
    @property
    def needs_rand(self) -> bool:
        """Caffe's InitRand condition: mirror, or a crop in phase TRAIN."""
        return self.mirror or (self.phase == TRAIN and self.crop_size > 0)

    def decode(self, datum: "caffe_pb2.Datum") -> np.ndarray:
        """The Datum's image as CHW (see :func:`decode_datum`); force_* apply to encoded Datums only."""
        return decode_datum(datum, self.force_color, self.force_gray) if datum.encoded else decode_datum(datum)

    def output_shape(self, image_shape: Sequence[int]) -> Tuple[int, int, int]:
        """``(C, h, w)`` of the transformed image of a ``(C, H, W)`` input (Caffe's InferBlobShape)."""
        c, h, w = (int(d) for d in image_shape)
        if self.crop_size:
            if h < self.crop_size or w < self.crop_size:
                raise TransformError(f"image of {h}x{w} is smaller than crop_size {self.crop_size}")
            return c, self.crop_size, self.crop_size
        return c, h, w

    def infer_shape(self, datum: "caffe_pb2.Datum") -> Tuple[int, int, int]:
        return self.output_shape(self.decode(datum).shape)

    # -- random draws -------------------------------------------------------------------------------------
    def draw(self, rng: Optional[np.random.Generator], shapes: Sequence[Sequence[int]]):
        """Per item ``(mirror, h_off, w_off)`` for images of ``shapes`` (C, H, W): three int arrays."""
        n = len(shapes)
        hs = np.array([int(s[1]) for s in shapes], dtype=np.int64)
        ws = np.array([int(s[2]) for s in shapes], dtype=np.int64)
        if self.needs_rand and rng is None:
            raise TransformError("this transformation is random (mirror, or a crop in TRAIN): pass a generator")
        mirror = rng.integers(0, 2, size=n) if self.mirror else np.zeros(n, dtype=np.int64)
        if self.crop_size:
            if (hs < self.crop_size).any() or (ws < self.crop_size).any():
                i = int(np.flatnonzero((hs < self.crop_size) | (ws < self.crop_size))[0])
                raise TransformError(f"image of {hs[i]}x{ws[i]} is smaller than crop_size {self.crop_size}")
            if self.phase == TRAIN:
                h_off = rng.integers(0, hs - self.crop_size + 1)
                w_off = rng.integers(0, ws - self.crop_size + 1)
            else:
                h_off = (hs - self.crop_size) // 2
                w_off = (ws - self.crop_size) // 2
        else:
            h_off = np.zeros(n, dtype=np.int64)
            w_off = np.zeros(n, dtype=np.int64)
        return mirror.astype(bool), h_off.astype(np.int64), w_off.astype(np.int64)

    # -- the transformation -------------------------------------------------------------------------------
    def _mean_for(self, shape) -> Optional[np.ndarray]:
        c = int(shape[0])
        if self.mean_values:
            if len(self.mean_values) not in (1, c):
                raise TransformError(f"specify either 1 mean_value or as many as channels: {c} "
                                     f"(got {len(self.mean_values)})")
            vals = self.mean_values * c if len(self.mean_values) == 1 else self.mean_values
            return np.asarray(vals, dtype=np.float32).reshape(c, 1, 1)
        return None

    def transform(self, images: Sequence[np.ndarray], rng: Optional[np.random.Generator] = None,
                  out: Optional[np.ndarray] = None, draws=None) -> np.ndarray:
        """Transform CHW images (uint8 or float32) into one float32 batch ``(N, C, h, w)``.

        With crop_size the images may differ in size (each is cropped from its own extent); without it they
        must all have the first image's size, as Caffe requires.  ``out`` (a float32 array of the batch
        shape) receives the result when given.  ``draws`` overrides the random draws (for tests).
        """
        if len(images) == 0:
            raise TransformError("no images to transform")
        c0 = int(images[0].shape[0])
        oshape = self.output_shape(images[0].shape)
        for i, im in enumerate(images):
            if im.ndim != 3 or int(im.shape[0]) != c0:
                raise TransformError(f"item {i} has shape {tuple(im.shape)}; the batch has {c0} channels")
            if not self.crop_size and tuple(im.shape) != tuple(images[0].shape):
                raise TransformError(f"item {i} has shape {tuple(im.shape)}, the first item "
                                     f"{tuple(images[0].shape)}: without crop_size all images must match")
        n = len(images)
        if out is None:
            out = np.empty((n,) + oshape, dtype=np.float32)
        elif out.shape != (n,) + oshape or out.dtype != np.float32:
            raise TransformError(f"out has shape {out.shape} {out.dtype}; expected {(n,) + oshape} float32")
        mirror, h_off, w_off = draws if draws is not None else self.draw(rng, [im.shape for im in images])
        ch, cw = oshape[1], oshape[2]
        mean_file = self.mean_file
        if mean_file is not None:
            for im in images:
                if tuple(im.shape) != mean_file.shape:
                    raise TransformError(f"image of shape {tuple(im.shape)} does not match the mean_file's "
                                         f"shape {mean_file.shape}")
        for i, im in enumerate(images):
            h, w = int(h_off[i]), int(w_off[i])
            crop = im[:, h:h + ch, w:w + cw]
            if mirror[i]:
                crop = crop[:, :, ::-1]
            out[i] = crop  # casts to float32 exactly (bytes and float32 values)
            if mean_file is not None:
                m = mean_file[:, h:h + ch, w:w + cw]
                out[i] -= m[:, :, ::-1] if mirror[i] else m
        mean = self._mean_for(oshape)
        if mean is not None:
            out -= mean
        if self.scale != np.float32(1):
            out *= self.scale  # (x - mean) * scale, in float32, as Caffe's Dtype arithmetic
        return out

    def transform_datums(self, datums: Sequence["caffe_pb2.Datum"], rng=None, out=None) -> np.ndarray:
        return self.transform([self.decode(d) for d in datums], rng, out)
