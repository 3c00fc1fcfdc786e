"""Shared helpers for the cic and colorization-layer tests: real images and a fake pycaffe blob.

References in these tests are independent of cic: scikit-image for Lab, brute-force numpy for
neighbours, scipy for smoothing, hand-computed cases and finite differences.
"""
from __future__ import annotations

import functools

import numpy as np
from skimage import color, data

IMAGES = ("astronaut", "coffee", "chelsea", "rocket")


@functools.lru_cache(maxsize=None)
def real_rgb(name: str) -> np.ndarray:
    """A colour photo shipped with scikit-image (uint8 H x W x 3), read-only."""
    img = getattr(data, name)()
    img.setflags(write=False)
    return img


def real_rgb_crops(n: int, size: int, stride: int = 2, seed: int = 0) -> np.ndarray:
    """n x size x size x 3 uint8 crops of the scikit-image photos (subsampled by ``stride``)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = real_rgb(IMAGES[i % len(IMAGES)])[::stride, ::stride]
        y = rng.integers(0, img.shape[0] - size + 1)
        x = rng.integers(0, img.shape[1] - size + 1)
        out[i] = img[y:y + size, x:x + size]
    return out


def real_ab(n: int, size: int, stride: int = 2, seed: int = 0) -> np.ndarray:
    """N x 2 x size x size float32 ab of real photos, computed by scikit-image."""
    lab = color.rgb2lab(real_rgb_crops(n, size, stride, seed))
    return np.ascontiguousarray(lab[..., 1:].transpose(0, 3, 1, 2)).astype(np.float32)


class FakeBlob:
    """The part of pycaffe's Blob that Python layers use: numpy ``data``/``diff``, ``reshape``, shape info."""

    def __init__(self, data=None, shape=None):
        if data is not None:
            self.data = np.array(data, dtype=np.float32)
        else:
            self.data = np.zeros(shape or (0,), np.float32)
        self.diff = np.zeros_like(self.data)

    def reshape(self, *shape):
        shape = tuple(int(s) for s in shape)
        if shape != self.data.shape:
            self.data = np.zeros(shape, np.float32)
            self.diff = np.zeros(shape, np.float32)

    @property
    def shape(self):
        return self.data.shape

    @property
    def count(self):
        return self.data.size

    num = property(lambda self: self.data.shape[0])
    channels = property(lambda self: self.data.shape[1])
    height = property(lambda self: self.data.shape[2])
    width = property(lambda self: self.data.shape[3])


def make_layer(cls, param_str: str = "", bottoms=(), n_top: int = 1, phase: int = 0):
    """Construct a layer the way pycaffe does, run setup + reshape; returns (layer, bottom blobs, top blobs)."""
    layer = cls()
    layer.param_str = param_str
    layer.phase = phase
    bottom = [FakeBlob(b) for b in bottoms]
    top = [FakeBlob() for _ in range(n_top)]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    return layer, bottom, top


def numpy_forward(cls, param_str, bottoms):
    """Run a layer's numpy (pycaffe) path; returns (layer, bottom blobs, top blobs)."""
    layer, bottom, top = make_layer(cls, param_str, bottoms)
    layer.forward(bottom, top)
    return layer, bottom, top


def directional_fd(f, x: np.ndarray, v: np.ndarray, eps: float = 1e-6) -> float:
    """Central finite difference of the scalar function f at x along v."""
    return (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
