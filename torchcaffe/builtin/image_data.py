"""The OpenCV-based data layers ``ImageData`` and ``WindowData``, as BVLC Caffe 1.0 computes them.

Images are decoded as BVLC does, with OpenCV: ``cv2.imread`` (IMREAD_COLOR, or IMREAD_GRAYSCALE for
``is_color: false``), resized with ``cv2.resize`` (INTER_LINEAR).  Random draws (shuffles, skips, window
sampling, crops, mirrors) come from NumPy generators derived from the run's seed (``torch.initial_seed()``)
and the batch index, as the Data layer's do: the same distributions as Caffe's, not Caffe's sequence.
Batches are read in the forward pass (no prefetch thread).
"""
from __future__ import annotations

import math
import os
import re
from typing import List, Optional, Tuple

import numpy as np
import torch

from .. import glog
from ..data_transformer import DataTransformer, TransformError
from ..layer import Layer, register
from .data import batch_generator

__all__ = ["ImageDataLayer", "WindowDataLayer", "read_image"]

STATE_VERSION = 1


def _seed() -> int:
    return int(torch.initial_seed()) & (2 ** 63 - 1)


def _generator(seed: int, *keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed)] + [int(k) for k in keys])))


def _atoi(text: str) -> int:
    """C's atoi: optional leading whitespace and sign, then digits; 0 when there are none."""
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def _round(v) -> int:
    """C's round(): halves away from zero (on the single-precision value, as Caffe's float arithmetic)."""
    v = float(v)
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def read_image(path: str, height: int = 0, width: int = 0, is_color: bool = True) -> Optional[np.ndarray]:
    """Caffe's ReadImageToCVMat: the image at ``path`` as OpenCV reads it (H x W x 3 BGR, or H x W grey), resized
    to ``height`` x ``width`` (INTER_LINEAR) when both are positive; None when OpenCV cannot read it."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    if height > 0 and width > 0:
        img = cv2.resize(img, (width, height))
    return img


def _chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((img[:, :, None] if img.ndim == 2 else img).transpose(2, 0, 1))


class _OpenCVDataLayer(Layer):
    """No bottoms, no backward; tops data and label, reshaped by each forward pass."""

    exact_bottoms = 0
    exact_tops = 2

    def reshape(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def _transformer(self) -> DataTransformer:
        try:
            return DataTransformer(self.layer_param.transform_param, self.phase)
        except TransformError as e:
            raise self.error(f"transform_param: {e}") from None

    def _set_tops(self, top, data: np.ndarray, labels: np.ndarray) -> None:
        d, lab = torch.from_numpy(data), torch.from_numpy(labels)
        if self.device.type != "cpu":
            d, lab = d.to(self.device), lab.to(self.device)
        top[0].data_t = d
        top[1].data_t = lab


@register("ImageData")
class ImageDataLayer(_OpenCVDataLayer):
    """BVLC's ImageDataLayer: images named in a list file, with integer labels.

    ``image_data_param``: ``source`` (a text file; each line is a path, a space, and a label -- the path may hold
    spaces, the label follows the last one), ``root_folder`` (prefixed to each path as a string, as Caffe does),
    ``batch_size``, ``new_height`` / ``new_width`` (resize; both or neither), ``is_color``, ``shuffle`` (permute
    the list at setup and at each pass over it), ``rand_skip`` (skip a random number in [0, rand_skip) of lines
    at the start).  ``transform_param`` as the Data layer (crop, mirror, mean, scale).  The batch takes the
    shape of its first image; without a crop every image of a batch must have that shape.
    """

    def layer_setup(self, bottom, top):
        p = self.layer_param.image_data_param
        self.new_height, self.new_width = int(p.new_height), int(p.new_width)
        if not ((self.new_height == 0 and self.new_width == 0) or (self.new_height > 0 and self.new_width > 0)):
            raise self.error("Current implementation requires new_height and new_width to be set at the same "
                             "time (image_data_param)")
        self.is_color = bool(p.is_color)
        self.root_folder = p.root_folder
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.error("Positive batch size required (image_data_param.batch_size)")
        self.shuffle = bool(p.shuffle)
        self.source = p.source
        try:
            with open(self.source, "r", newline="\n") as f:
                text = f.read()
        except OSError as e:
            raise self.error(f"cannot open image_data_param.source '{self.source}' ({e.strerror}; relative paths "
                             f"are taken from the working directory {os.getcwd()})") from None
        self.lines: List[Tuple[str, int]] = []
        for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
            pos = line.rfind(" ")
            if pos < 0:  # Caffe: npos -> the whole line is the path and atoi(the whole line) the label
                self.lines.append((line, _atoi(line)))
            else:
                self.lines.append((line[:pos], _atoi(line[pos + 1:])))
        if not self.lines:
            raise self.error(f"File is empty: image_data_param.source '{self.source}' lists no images")
        self.transformer = self._transformer()
        self.seed = _seed()
        glog.info(f"A total of {len(self.lines)} images.", src="image_data_layer.cpp:58")
        skip = 0
        if p.rand_skip:
            skip = int(_generator(self.seed, 1).integers(0, 2 ** 32)) % int(p.rand_skip)
            glog.info(f"Skipping first {skip} data points.", src="image_data_layer.cpp:65")
            if skip >= len(self.lines):
                raise self.error(f"Not enough points to skip: {len(self.lines)} lines, skipping {skip}")
        self._start = {"version": STATE_VERSION, "lines_id": skip, "epoch": 0, "batch": 0, "seed": self.seed}
        self.set_state(self._start)
        img = self._read(self.lines_id)
        try:
            shape = self.transformer.output_shape(_chw(img).shape)
        except TransformError as e:
            raise self.error(str(e)) from None
        top[0].reshape((self.batch_size,) + tuple(shape))
        top[1].reshape((self.batch_size,))

    # -- the list's order --------------------------------------------------------------------------------------
    def _order_for(self, epoch: int) -> List[int]:
        """The line order of pass ``epoch``: shuffled at setup, then reshuffled at each wrap (when shuffling)."""
        order = list(range(len(self.lines)))
        if self.shuffle:
            for e in range(epoch + 1):
                _generator(self.seed, 2, e).shuffle(order)
        return order

    def _read(self, i: int) -> np.ndarray:
        path, _ = self.lines[self.order[i]]
        img = read_image(self.root_folder + path, self.new_height, self.new_width, self.is_color)
        if img is None:
            raise self.error(f"Could not load {self.root_folder + path} (listed in '{self.source}')")
        return img

    def forward(self, bottom, top):
        images, labels = [], np.empty(self.batch_size, dtype=np.float32)
        n = len(self.lines)
        for item in range(self.batch_size):
            images.append(_chw(self._read(self.lines_id)))
            labels[item] = self.lines[self.order[self.lines_id]][1]
            self.lines_id += 1
            if self.lines_id >= n:
                self.lines_id = 0
                self.epoch += 1
                self.order = self._order_for(self.epoch)
        tr = self.transformer
        rng = batch_generator(self.seed, 0, self.batch) if tr.needs_rand else None
        try:
            data = tr.transform(images, rng)
        except TransformError as e:
            raise self.error(str(e)) from None
        self.batch += 1
        self._set_tops(top, data, labels)

    # -- resumption ----------------------------------------------------------------------------------------------
    def state(self):
        return {"version": STATE_VERSION, "lines_id": self.lines_id, "epoch": self.epoch, "batch": self.batch,
                "seed": self.seed}

    def set_state(self, state) -> None:
        if state is None:
            state = self._start
        try:
            self.seed = int(state["seed"])
            self.epoch = int(state["epoch"])
            self.batch = int(state["batch"])
            lines_id = int(state["lines_id"])
        except (KeyError, TypeError, ValueError):
            raise self.error(f"cannot restore from state {state!r}: expected the dict that state() returns") from None
        if not 0 <= lines_id < len(self.lines):
            raise self.error(f"the saved state points at line {lines_id}; '{self.source}' has {len(self.lines)}")
        self.lines_id = lines_id
        self.order = self._order_for(self.epoch)


@register("WindowData")
class WindowDataLayer(_OpenCVDataLayer):
    """BVLC's WindowDataLayer (R-CNN fine-tuning): windows cropped from images and warped to crop_size.

    The window file (``window_data_param.source``) repeats, per image::

        # image_index
        image_path            (root_folder is prefixed)
        channels height width
        num_windows
        class_index overlap x1 y1 x2 y2      (num_windows lines; pixel coordinates, inclusive)

    Windows with overlap >= ``fg_threshold`` are foreground (label must be > 0), those with overlap <
    ``bg_threshold`` background (label and overlap forced to 0), the others unused.  Each batch holds
    batch_size - int(batch_size * ``fg_fraction``) background windows, then the foreground ones, each drawn
    uniformly with replacement.  A window is widened by ``context_pad`` pixels of context (scaled to the crop)
    and, with ``crop_mode: "square"``, made square; the part inside the image is resized (INTER_LINEAR) to its
    share of the crop_size x crop_size output, the rest is left 0.  ``transform_param``: ``crop_size``
    (required), ``mirror`` (a coin flip per window, padding mirrored too), ``mean_file`` (its centre
    crop_size region) or ``mean_value``; the scale is ``window_data_param.scale``, as in Caffe.
    ``cache_images`` keeps the encoded files in memory.
    """

    IMAGE_INDEX, LABEL, OVERLAP, X1, Y1, X2, Y2 = range(7)

    def layer_setup(self, bottom, top):
        p = self.layer_param.window_data_param
        tp = self.layer_param.transform_param
        self.fg_threshold = float(np.float32(p.fg_threshold))
        self.bg_threshold = float(np.float32(p.bg_threshold))
        self.fg_fraction = np.float32(p.fg_fraction)
        self.context_pad = int(p.context_pad)
        self.crop_mode = p.crop_mode
        if self.crop_mode not in ("warp", "square"):
            raise self.error(f"window_data_param.crop_mode must be \"warp\" or \"square\", got {self.crop_mode!r}")
        self.cache_images = bool(p.cache_images)
        self.root_folder = p.root_folder
        self.scale = np.float32(p.scale)
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.error("window_data_param.batch_size must be positive")
        self.crop_size = int(tp.crop_size)
        if self.crop_size <= 0:
            raise self.error("transform_param.crop_size must be positive (WindowData warps windows to it)")
        if 2 * self.context_pad >= self.crop_size and (self.context_pad > 0 or self.crop_mode == "square"):
            raise self.error(f"context_pad {self.context_pad} leaves no room in crop_size {self.crop_size}")
        self.mirror = bool(tp.mirror)
        self.source = p.source
        self._read_window_file()
        tr = self._transformer()  # parses and checks mean_file / mean_value
        self.mean_file = tr.mean_file
        self.mean_values = None
        if tr.mean_values:
            if len(tr.mean_values) not in (1, self.channels):
                raise self.error(f"Specify either 1 mean_value or as many as channels: {self.channels}")
            self.mean_values = np.asarray(tr.mean_values * self.channels if len(tr.mean_values) == 1
                                          else tr.mean_values, dtype=np.float32)
        if self.mean_file is not None:
            mc, mh, mw = self.mean_file.shape
            off = int((mw - self.crop_size) / 2)
            if mc != self.channels or off < 0 or off + self.crop_size > mh:
                raise self.error(f"mean_file has shape {self.mean_file.shape}; WindowData needs {self.channels} "
                                 f"channels and at least {self.crop_size} x {self.crop_size}")
        self.seed = _seed()
        self.batch = 0
        top[0].reshape((self.batch_size, self.channels, self.crop_size, self.crop_size))
        top[1].reshape((self.batch_size,))

    def _read_window_file(self) -> None:
        try:
            with open(self.source, "r") as f:
                tokens = f.read().split()
        except OSError as e:
            raise self.error(f"Failed to open window file {self.source} ({e.strerror}; relative paths are taken "
                             f"from the working directory {os.getcwd()})") from None
        if len(tokens) < 2:
            raise self.error(f"Window file is empty: {self.source}")
        pos = 0

        def take(kind, what):
            nonlocal pos
            if pos >= len(tokens):
                raise self.error(f"window file {self.source}: ends where {what} was expected")
            tok = tokens[pos]
            pos += 1
            try:
                return kind(tok)
            except ValueError:
                raise self.error(f"window file {self.source}: {what} must be {kind.__name__}, got {tok!r}") from None

        self.images: List[Tuple[str, Tuple[int, int, int]]] = []
        self.cache: List[bytes] = []
        self.fg_windows, self.bg_windows = [], []
        self.channels = 0
        while pos < len(tokens):
            hashtag = take(str, "'#'")
            if hashtag != "#":
                raise self.error(f"window file {self.source}: expected '#' before an image index, got {hashtag!r}")
            image_index = take(int, "an image index")
            path = self.root_folder + take(str, "an image path")
            size = (take(int, "channels"), take(int, "height"), take(int, "width"))
            if image_index != len(self.images):
                raise self.error(f"window file {self.source}: image index {image_index} out of order (expected "
                                 f"{len(self.images)}); windows refer to images by their position")
            self.images.append((path, size))
            self.channels = size[0]
            if self.cache_images:
                try:
                    with open(path, "rb") as f:
                        self.cache.append(f.read())
                except OSError as e:
                    raise self.error(f"Could not open or find file {path} ({e.strerror})") from None
            for _ in range(take(int, "num_windows")):
                label, overlap = take(int, "a class index"), np.float32(take(float, "an overlap"))
                x1, y1, x2, y2 = (take(int, c) for c in ("x1", "y1", "x2", "y2"))
                window = [image_index, label, float(overlap), x1, y1, x2, y2]
                if overlap >= self.fg_threshold:
                    if label <= 0:
                        raise self.error(f"window file {self.source}: foreground window of image {image_index} "
                                         f"has class index {label}; it must be > 0")
                    self.fg_windows.append(window)
                elif overlap < self.bg_threshold:
                    window[self.LABEL] = 0
                    window[self.OVERLAP] = 0.0
                    self.bg_windows.append(window)
        if self.channels != 3:
            raise self.error(f"window file {self.source}: images have {self.channels} channels; WindowData reads "
                             f"them in colour (3 channels)")
        glog.info(f"Number of images: {len(self.images)}", src="window_data_layer.cpp:161")

    def _image(self, index: int) -> np.ndarray:
        import cv2

        path = self.images[index][0]
        if self.cache_images:
            img = cv2.imdecode(np.frombuffer(self.cache[index], dtype=np.uint8), cv2.IMREAD_COLOR)
        else:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise self.error(f"Could not open or find file {path}")
        return img

    def window_crop(self, img: np.ndarray, window, do_mirror: bool, out: np.ndarray) -> None:
        """Warp ``window`` of ``img`` (H x W x C, BGR) into ``out`` (C x crop x crop float32, zeros), with the
        mean and scale applied to the pixels written (Caffe's load_batch, one item)."""
        import cv2

        crop = self.crop_size
        f32 = np.float32
        x1, y1, x2, y2 = (int(window[k]) for k in (self.X1, self.Y1, self.X2, self.Y2))
        pad_w = pad_h = 0
        out_w = out_h = crop
        rows, cols = img.shape[:2]
        if self.context_pad > 0 or self.crop_mode == "square":
            context_scale = f32(crop) / f32(crop - 2 * self.context_pad)
            half_height = f32(f32(y2 - y1 + 1) / 2.0)
            half_width = f32(f32(x2 - x1 + 1) / 2.0)
            center_x = f32(x1) + half_width
            center_y = f32(y1) + half_height
            if self.crop_mode == "square":
                if half_height > half_width:
                    half_width = half_height
                else:
                    half_height = half_width
            x1 = _round(center_x - half_width * context_scale)
            x2 = _round(center_x + half_width * context_scale)
            y1 = _round(center_y - half_height * context_scale)
            y2 = _round(center_y + half_height * context_scale)
            unclipped_height, unclipped_width = y2 - y1 + 1, x2 - x1 + 1
            pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
            pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
            if not (x1 > -1 and y1 > -1 and x2 < cols and y2 < rows) or x2 < x1 or y2 < y1:
                raise self.error(f"window {window[3:]} of image {window[0]} ({cols} x {rows}) lies outside it")
            clipped_height, clipped_width = y2 - y1 + 1, x2 - x1 + 1
            scale_x = f32(crop) / f32(unclipped_width)
            scale_y = f32(crop) / f32(unclipped_height)
            out_w = _round(f32(clipped_width) * scale_x)
            out_h = _round(f32(clipped_height) * scale_y)
            pad_x1 = _round(f32(pad_x1) * scale_x)
            pad_x2 = _round(f32(pad_x2) * scale_x)
            pad_y1 = _round(f32(pad_y1) * scale_y)
            pad_h = pad_y1
            pad_w = pad_x2 if do_mirror else pad_x1
            if pad_h + out_h > crop:
                out_h = crop - pad_h
            if pad_w + out_w > crop:
                out_w = crop - pad_w
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows):
            raise self.error(f"window {window[3:]} of image {window[0]} does not lie in the image ({cols} x {rows})")
        if out_w <= 0 or out_h <= 0:
            raise self.error(f"window {window[3:]} of image {window[0]} warps to an empty {out_w} x {out_h} region")
        roi = img[y1:y2 + 1, x1:x2 + 1]
        warped = cv2.resize(roi, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        if do_mirror:
            warped = cv2.flip(warped, 1)
        pix = _chw(warped).astype(np.float32)
        region = (slice(None), slice(pad_h, pad_h + out_h), slice(pad_w, pad_w + out_w))
        if self.mean_file is not None:
            off = int((self.mean_file.shape[2] - crop) / 2)
            m = self.mean_file[:, off + pad_h:off + pad_h + out_h, off + pad_w:off + pad_w + out_w]
            out[region] = (pix - m) * self.scale
        elif self.mean_values is not None:
            out[region] = (pix - self.mean_values[:, None, None]) * self.scale
        else:
            out[region] = pix * self.scale

    def forward(self, bottom, top):
        if not self.fg_windows or not self.bg_windows:
            raise self.error(f"window file {self.source} gives {len(self.fg_windows)} foreground and "
                             f"{len(self.bg_windows)} background windows; WindowData needs both")
        rng = batch_generator(self.seed, 0, self.batch)
        num_fg = int(np.float32(self.batch_size) * self.fg_fraction)
        data = np.zeros((self.batch_size, self.channels, self.crop_size, self.crop_size), dtype=np.float32)
        labels = np.empty(self.batch_size, dtype=np.float32)
        item = 0
        for windows, count in ((self.bg_windows, self.batch_size - num_fg), (self.fg_windows, num_fg)):
            for _ in range(count):
                window = windows[int(rng.integers(0, 2 ** 32)) % len(windows)]
                do_mirror = self.mirror and bool(int(rng.integers(0, 2 ** 32)) % 2)
                img = self._image(int(window[self.IMAGE_INDEX]))
                self.window_crop(img, window, do_mirror, data[item])
                labels[item] = window[self.LABEL]
                item += 1
        self.batch += 1
        self._set_tops(top, data, labels)

    def state(self):
        return {"version": STATE_VERSION, "batch": self.batch, "seed": self.seed}

    def set_state(self, state) -> None:
        if state is None:
            self.batch = 0
            return
        try:
            self.batch, self.seed = int(state["batch"]), int(state["seed"])
        except (KeyError, TypeError, ValueError):
            raise self.error(f"cannot restore from state {state!r}: expected the dict that state() returns") from None
