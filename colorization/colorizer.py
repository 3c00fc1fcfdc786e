"""Colorize images with a colorization deploy net (ours or the released ``colorization_deploy_v2``).

The one place where a deploy net is loaded and run on an image; ``colorize_image.py``, the demo and the
benchmarks use it.  The pipeline is the released demo's: resize the RGB image to the net's input size, take
its L channel (minus 50) as ``data_l``, run the net, upsample the predicted ab bilinearly to the original size
and combine it with the original image's own L.

Released weights lack the two fixed layers that the released deploy file adds after ``conv8_313``: the
temperature scale ``conv8_313_rh`` (2.606 = 1/0.38) and the bin centres ``class8_ab``; they are filled in when
the weights did not provide them, as OpenCV's colorization sample does.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

import cic
import torchcaffe as caffe

REPO = Path(__file__).resolve().parents[1]

DEFAULT_PROTOTXT = REPO / "prototxt" / "colorization_deploy.prototxt"
RELEASE_TEMPERATURE_SCALE = 2.606  # 1 / 0.38, as the released deploy file writes it


def fill_fixed_layers(net, copied=()) -> list:
    """Give ``class8_ab`` the 313 bin centres and ``conv8_313_rh`` the released 2.606 scale, where neither the
    weights (``copied``: the layers the weights file set) nor a filler in the prototxt provided them."""
    filled = []
    layer = net.layer_dict.get("class8_ab")
    if layer is not None and layer.layer_param.type == "Convolution" and "class8_ab" not in copied \
            and not layer.layer_param.convolution_param.HasField("weight_filler"):
        w = layer.blobs[0]
        w.data_t = torch.as_tensor(cic.load_bins().T.astype(np.float32)).reshape(w.shape)
        for b in layer.blobs[1:]:
            b.data_t = torch.zeros(b.shape)
        filled.append("class8_ab")
    layer = net.layer_dict.get("conv8_313_rh")
    if layer is not None and layer.blobs and "conv8_313_rh" not in copied \
            and not layer.layer_param.scale_param.HasField("filler"):
        layer.blobs[0].data_t = torch.full(layer.blobs[0].shape, RELEASE_TEMPERATURE_SCALE)
        filled.append("conv8_313_rh")
    return filled


def ab_output(net) -> str:
    """The blob holding the predicted ab: the net's last output, or ``class8_ab`` when the released deploy
    file's final Silence layer leaves the net without outputs."""
    return net.outputs[-1] if net.outputs else "class8_ab"


class Colorizer:
    """A deploy net ready to colorize RGB images (H x W x 3, uint8 or floats in [0, 1])."""

    def __init__(self, prototxt=DEFAULT_PROTOTXT, weights=None, device="cpu", fast=True):
        #: run the fast inference path (torchcaffe.fast: BatchNorm folded, channels-last, bf16 where the
        #: hardware has it; mean |delta ab| <= 1); False: caffe.Net's exact float32
        self.fast, self._module = fast, None
        self.net = caffe.Net(str(prototxt), caffe.TEST, device=device)
        copied = []
        for w in (str(weights).split(",") if weights else []):  # Caffe's -weights a,b
            copied += self.net.copy_from(w)
        self.filled = fill_fixed_layers(self.net, copied)
        if "data_l" not in self.net.blobs:
            raise ValueError(f"{prototxt}: a colorization deploy net needs an input blob 'data_l'")
        self.input_hw = tuple(self.net.blobs["data_l"].shape[-2:])
        self.output = ab_output(self.net)

    def predict_ab(self, rgb: np.ndarray) -> np.ndarray:
        """The net's ab prediction (2 x h x w, the net's own output resolution) for one RGB image."""
        from torchcaffe.io import resize_image

        img = _as_float_rgb(rgb)
        small = resize_image(img, self.input_hw)
        L = cic.rgb2lab(np.clip(small, 0, 1))[..., 0]
        L = torch.from_numpy(np.ascontiguousarray(L, dtype=np.float32))[None, None]
        return self.forward_ab(L - 50.0)[0].cpu().numpy()

    def predict_ab_full(self, L: torch.Tensor) -> torch.Tensor:
        """ab ``(N, 2, H, W)`` for a batch of lightness ``L`` ``(N, 1, H, W)`` (0..100), run at the batch's own
        size (the nets are fully convolutional; H and W must be multiples of 8), upsampled bilinearly to H x W."""
        return cic.upsample_bilinear(self.forward_ab(L - 50.0), L.shape[-2:])

    def forward_ab(self, data_l: torch.Tensor) -> torch.Tensor:
        """The net's ab output for ``data_l`` (N x 1 x h x w, L - 50): the fast path unless ``fast=False``."""
        data_l = data_l.to(self.net.device)
        if self.fast:
            if self._module is None:
                from torchcaffe.fast import to_module

                self._module = to_module(self.net, outputs=[self.output], optimize=True)
            with torch.no_grad():
                return self._module(data_l=data_l)[self.output]
        blob = self.net.blobs["data_l"]
        blob.reshape(*data_l.shape)
        self.net.reshape()
        blob.data_t = data_l
        self.net.forward_loss()
        return self.net.blobs[self.output].data_t

    def colorize(self, rgb: np.ndarray) -> np.ndarray:
        """Colorized RGB uint8 image of the input's size (the input's own L, the predicted ab)."""
        img = _as_float_rgb(rgb)
        ab = self.predict_ab(img)
        L = cic.rgb2lab(img)[..., :1].transpose(2, 0, 1)[None]
        out = cic.colorize(L.astype(np.float32), ab[None].astype(np.float32))
        return (255 * np.clip(out[0].transpose(1, 2, 0), 0, 1) + 0.5).astype(np.uint8)


def _as_float_rgb(rgb) -> np.ndarray:
    img = np.asarray(rgb)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an H x W x 3 image, got shape {img.shape}")
    img = img[..., :3]
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return img.astype(np.float32)


def read_image(path) -> np.ndarray:
    """An image file as RGB uint8 (gray and RGBA converted), with an error naming the file."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8) if os.path.exists(path) else None
    if data is None:
        raise FileNotFoundError(f"{path}: no such file")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not an image that OpenCV can decode")
    return bgr[..., ::-1].copy()


def write_image(path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image atomically (format from the file's extension)."""
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot write this format")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def randomize_weights(net, seed: int = 0) -> None:
    """Random but well-scaled weights for every parameter of ``net`` (deploy files carry no fillers).

    Convolutions get He-normal weights and small biases; BatchNorm gets random means, variances around 1 and
    the scale factor 1 (Caffe's three blobs); Scale layers weights around 1.  Used by the benchmarks and the
    cross-checks against other Caffe readers, where only the arithmetic matters.
    """
    g = torch.Generator().manual_seed(seed)
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].layer_param.type
        if kind == "BatchNorm":
            c = blobs[0].shape
            blobs[0].data_t = 0.1 * torch.randn(c, generator=g)
            blobs[1].data_t = 0.5 + torch.rand(c, generator=g)
            blobs[2].data_t = torch.ones(blobs[2].shape)
        elif kind == "Scale":
            blobs[0].data_t = 1 + 0.1 * torch.randn(blobs[0].shape, generator=g)
            for b in blobs[1:]:
                b.data_t = 0.1 * torch.randn(b.shape, generator=g)
        else:
            w = blobs[0]
            fan_in = w.count // w.shape[0] if kind != "Deconvolution" else w.count // w.shape[1]
            w.data_t = torch.randn(w.shape, generator=g) * (2.0 / max(fan_in, 1)) ** 0.5
            for b in blobs[1:]:
                b.data_t = 0.01 * torch.randn(b.shape, generator=g)


def random_colorization_weights(net, seed: int = 0) -> None:
    """Random weights for a colorization deploy net, for benchmarks and cross-checks: He-normal everywhere,
    ``conv8_313`` scaled down so that its logits have a trained net's magnitude (~10 rather than ~100, which
    the temperature softmax would turn into one-hot distributions that amplify float32 rounding), and the
    fixed layers (bin centres, temperature) filled in."""
    randomize_weights(net, seed)
    if "conv8_313" in net.params:
        w = net.params["conv8_313"][0]
        w.data_t = 0.1 * w.data_t
    fill_fixed_layers(net)
