"""Colorize images with a colorization deploy net (ours or the released ``colorization_deploy_v2``).

The one place where a deploy net is loaded and run on an image; ``colorize_image.py`` (``colorization.colorize``),
the evaluation, the demo and the benchmarks use it.  The pipeline is the released demo's: the net sees the
lightness of the photo resized to its input size (L - 50 as ``data_l``), its ab prediction is upsampled
bilinearly to the photo's size and combined with the photo's own L at full resolution.  Two things differ
from the released script, both for photos it did not handle: the resized copy is area-averaged when it
shrinks (no aliasing on a large photo), and out-of-gamut colours lose chroma at constant L
(``cic.fit_to_gamut``) instead of having R, G and B clipped (which moves L; ``clip=True`` keeps that).

A photo of any size is composed in strips of rows (``compose``): the memory beyond the input and the output
images is a few strips, so a 20000 x 20000 photo costs about its own size twice.

Released weights lack the two fixed layers that the released deploy file adds after ``conv8_313``: the
temperature scale ``conv8_313_rh`` (2.606 = 1/0.38) and the bin centres ``class8_ab``; they are filled in when
the weights did not provide them, as OpenCV's colorization sample does.  Weights that leave any other layer
of the net unset are an error naming those layers (``WeightsError``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

import cic
import torchcaffe as caffe

from .images import Photo, read_photo, write_photo
from .paths import DEFAULT_PROTOTXT

RELEASE_TEMPERATURE_SCALE = 2.606  # 1 / 0.38, as the released deploy file writes it
#: The layers that ``fill_fixed_layers`` provides when weights lack them.
FIXED_LAYERS = ("class8_ab", "conv8_313_rh")
#: Pixels per strip when composing the full-resolution output (its float32 temporaries: some 40 MB).
STRIP_PIXELS = 1 << 18


class WeightsError(ValueError):
    """Weights that do not cover a deploy net (the message names the file and the layers left unset)."""


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


def load_weights(net, weights, prototxt="the net") -> Tuple[list, list]:
    """Copy ``weights`` (a path, or Caffe's comma-separated list) into ``net`` and complete the fixed layers.

    Returns ``(copied, filled)``.  ``WeightsError`` when the weights leave learnable layers of the net unset
    (``net.uncovered_layers`` after ``copy_from``: a layer is unset when no file of the list set it; the fixed
    layers count as covered, by the weights, a filler or ``fill_fixed_layers``).
    """
    from torchcaffe import glog

    files = [w for w in str(weights).split(",") if w]
    copied, uncovered = [], None
    level = glog.get_level()
    glog.set_level(max(level, glog.ERROR))  # the runtime's warning on unset layers: reported below instead
    try:
        for w in files:
            copied += net.copy_from(w)
            u = getattr(net, "uncovered_layers", None)
            if u is not None:
                uncovered = set(u) if uncovered is None else uncovered & set(u)
    finally:
        glog.set_level(level)
    if uncovered is None:  # a runtime without uncovered_layers: the layers with parameters that no file set
        uncovered = {name for name in net.params if name not in copied}
    filled = fill_fixed_layers(net, copied)
    order = [name for name in net.params]
    missing = [n for n in order if n in uncovered and n not in FIXED_LAYERS]
    missing += sorted(n for n in uncovered if n not in order and n not in FIXED_LAYERS)
    if missing:
        names = ", ".join(missing[:12]) + (f", ... ({len(missing)} in all)" if len(missing) > 12 else "")
        learnable = [n for n in order if n not in FIXED_LAYERS]
        what = "sets none of the" if len(missing) == len(learnable) else "leaves unset"
        raise WeightsError(f"{weights}: {what} weights of {prototxt}: layers {names} "
                           f"(weights for another net? describe both with tools/describe_net.py)")
    return copied, filled


def torch_device(gpu: int) -> str:
    """Caffe's ``-gpu N`` (``-1``: the CPU) as a torch device, through the runtime's own check
    (``caffe.set_device`` / ``set_mode_gpu``); ``ValueError`` naming the flag when there is no such device."""
    if gpu < 0:
        return "cpu"
    try:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
    except (RuntimeError, ValueError, AssertionError) as e:
        raise ValueError(f"-gpu {gpu}: {e}") from None
    if gpu >= torch.cuda.device_count():
        raise ValueError(f"-gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) here")
    return f"cuda:{gpu}"


class Colorizer:
    """A deploy net ready to colorize photos.

    ``weights``: a .caffemodel or .h5 (or Caffe's ``a,b``); they must cover the net (``WeightsError``
    otherwise).  ``weights=None`` keeps the net's initial weights (benchmarks and tests; the command line
    refuses it).
    """

    def __init__(self, prototxt=DEFAULT_PROTOTXT, weights=None, device="cpu", fast=True):
        #: run the fast inference path (torchcaffe.fast: BatchNorm folded, channels-last, bf16 where the
        #: hardware has it; mean |delta ab| <= 1); False: caffe.Net's exact float32
        self.fast, self._module = fast, None
        self.net = caffe.Net(str(prototxt), caffe.TEST, device=device)
        if "data_l" not in self.net.blobs:
            raise ValueError(f"{prototxt}: a colorization deploy net needs an input blob 'data_l'")
        self.filled = []
        if weights:
            _, self.filled = load_weights(self.net, weights, prototxt)
        self.input_hw = tuple(self.net.blobs["data_l"].shape[-2:])
        self.output = ab_output(self.net)
        self.device = device

    # -- the net ---------------------------------------------------------------------------------------
    def net_lightness(self, photo: Photo) -> np.ndarray:
        """L (0..100, h x w float32) of ``photo`` resized to the net's input size."""
        return cic.rgb2lab(np.clip(photo.resized(self.input_hw), 0, 1))[..., 0].astype(np.float32)

    def predict_ab_batch(self, L) -> torch.Tensor:
        """The net's ab ``(N, 2, h', w')`` (its own output resolution, on the CPU) for lightness ``(N, 1, h, w)``
        or ``(N, h, w)`` (0..100) at the net's input size."""
        L = torch.as_tensor(np.asarray(L, dtype=np.float32))
        if L.dim() == 3:
            L = L[:, None]
        return self.forward_ab(L - 50.0).detach().float().cpu().clone()

    def predict_ab(self, rgb: np.ndarray) -> np.ndarray:
        """The net's ab prediction (2 x h x w, the net's own output resolution) for one RGB image."""
        return self.predict_ab_batch(self.net_lightness(photo_from_array(rgb))[None])[0].numpy()

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
        with torch.no_grad():
            self.net.forward_loss()
        return self.net.blobs[self.output].data_t

    # -- photos ----------------------------------------------------------------------------------------
    def colorize_photos(self, photos: Sequence[Photo], clip: bool = False, side_by_side: bool = False):
        """Colorize several photos with one forward pass; yields ``(rgb, alpha)`` per photo (see ``compose``)."""
        ab = self.predict_ab_batch(np.stack([self.net_lightness(p) for p in photos]))
        for photo, ab1 in zip(photos, ab):
            yield compose(photo, ab1, clip=clip, side_by_side=side_by_side)

    def colorize(self, rgb: np.ndarray, clip: bool = False) -> np.ndarray:
        """Colorized RGB image of the input's size and depth (uint8 -> uint8, uint16 -> uint16; floats in
        [0, 1] -> uint8): the input's own L, the predicted ab."""
        return next(self.colorize_photos([photo_from_array(rgb)], clip=clip))[0]


def photo_from_array(rgb) -> Photo:
    """A ``Photo`` from an H x W (x 3 or 4) array: uint8, uint16 or floats in [0, 1] (stored as uint8)."""
    img = np.asarray(rgb)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f"expected an H x W x 3 image, got shape {img.shape}")
    if img.dtype not in (np.uint8, np.uint16):
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 4:
        return Photo(np.ascontiguousarray(img[..., :3]), np.ascontiguousarray(img[..., 3]))
    return Photo(img)


class _RowUpsampler:
    """Bilinear upsampling of ab ``(2, h, w)`` to ``(2, H, W)``, one band of rows at a time: exactly
    ``cic.upsample_bilinear`` (half-pixel centres, clamped edges), separably -- along x once for the h rows,
    then along y for the rows asked for."""

    def __init__(self, ab: torch.Tensor, size: Tuple[int, int]):
        self.h = ab.shape[-2]
        self.H = int(size[0])
        self.ax = F.interpolate(ab[None].float(), size=(self.h, int(size[1])), mode="bilinear",
                                align_corners=False)[0]

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        scale = self.h / self.H
        src = ((torch.arange(r0, r1, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0)
        y0 = src.floor().long().clamp_max(self.h - 1)
        y1 = (y0 + 1).clamp_max(self.h - 1)
        wy = (src - y0).float()[None, :, None]
        return self.ax[:, y0] * (1 - wy) + self.ax[:, y1] * wy


def compose(photo: Photo, ab: torch.Tensor, clip: bool = False, side_by_side: bool = False,
            strip_pixels: int = STRIP_PIXELS) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The colorized photo: its own L (full resolution), ``ab`` ``(2, h, w)`` upsampled bilinearly to its size.

    Returns ``(rgb, alpha)``: rgb H x W x 3 of the photo's depth (uint8 or uint16), the photo's alpha (or
    None).  Out-of-gamut colours lose chroma at constant L (``cic.fit_to_gamut``), so the output's L is the
    input's up to rounding; ``clip=True`` clips R, G and B instead (the released script).  ``side_by_side``:
    the input (as RGB) on the left, the colorized photo on the right.  Computed in strips of rows.
    """
    H, W = photo.shape
    maxval = photo.maxval
    dtype = photo.pixels.dtype
    off = W if side_by_side else 0
    out = np.empty((H, W + off, 3), dtype=dtype)
    up = _RowUpsampler(ab, (H, W))
    step = max(1, strip_pixels // max(W, 1))
    for r0 in range(0, H, step):
        r1 = min(H, r0 + step)
        rgb_in = torch.from_numpy(photo.rows(r0, r1)).permute(2, 0, 1)
        L = cic.rgb_to_lab(rgb_in)[:1]
        lab = torch.cat([L, up.rows(r0, r1)], dim=0)
        rgb = cic.lab_to_rgb(lab, clip=True, keep_lightness=not clip)
        out[r0:r1, off:] = (rgb.permute(1, 2, 0).numpy() * maxval + 0.5).astype(dtype)
        if side_by_side:
            px = photo.pixels[r0:r1]
            out[r0:r1, :W] = px[..., None] if px.ndim == 2 else px
    alpha = photo.alpha
    if alpha is not None and side_by_side:
        alpha = np.concatenate([alpha, alpha], axis=1)
    return out, alpha


def read_image(path) -> np.ndarray:
    """An image file as RGB uint8 (gray, palette, CMYK and RGBA converted; 16-bit reduced), with an error
    naming the file."""
    photo = read_photo(path)
    px = photo.pixels
    if px.dtype == np.uint16:
        px = ((px.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(px[..., None], 3, axis=2) if px.ndim == 2 else px


def write_image(path, rgb: np.ndarray) -> None:
    """Write an RGB image atomically (format from the file's extension)."""
    write_photo(path, np.asarray(rgb))


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
