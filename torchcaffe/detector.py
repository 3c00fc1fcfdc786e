"""pycaffe's ``caffe.Detector``: windowed detection (R-CNN style) with a TEST-phase ``Net``.

Each window (``ymin, xmin, ymax, xmax`` in pixels) is cut from its image, optionally with ``context_pad``
pixels of surrounding context (the region is enlarged so that, once warped to the net's input, a border of
``context_pad`` pixels is context; what falls outside the image is filled with the mean), warped to the net's
input size by the :class:`~torchcaffe.io.Transformer` and classified in batches (``Net.forward_all``).
"""
from __future__ import annotations

import os

import numpy as np

from . import io as caffe_io
from .classifier import configure_transformer
from .mode import TEST
from .net import Net


class Detector(Net):
    """``Detector(model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
    channel_swap=None, context_pad=None)``."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Classify every window of every image: ``images_windows`` is a sequence of (image file name,
        windows).  Returns one ``{'window', 'prediction', 'filename'}`` dict per window, in order."""
        images_windows = [(fname, list(windows)) for fname, windows in images_windows]
        crops = []
        for fname, windows in images_windows:
            image = caffe_io.load_image(fname).astype(np.float32)
            for window in windows:
                crops.append(self.crop(image, window))
        if not crops:
            return []
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(crops), crops[0].shape[2]) + tuple(self.blobs[in_].data.shape[2:]),
                            dtype=np.float32)
        for ix in range(len(crops)):
            caffe_in[ix] = self.transformer.preprocess(in_, crops[ix])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections = []
        ix = 0
        for fname, windows in images_windows:
            for window in windows:
                detections.append({'window': window, 'prediction': predictions[ix], 'filename': fname})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames):
        """Detect over Selective Search proposals (needs the ``selective_search_ijcv_with_python`` package
        and MATLAB, as pycaffe)."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise ImportError("Detector.detect_selective_search needs the selective_search_ijcv_with_python "
                              "package (https://github.com/sergeyk/selective_search_ijcv_with_python)") from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd='selective_search_rcnn')
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im, window):
        """The H x W x K crop of ``im`` for ``window`` (``ymin, xmin, ymax, xmax``), with the configured
        context: then it has the net's input size, the context region resized into it and the rest mean."""
        window = np.asarray(window)
        if not self.context_pad:
            return im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        crop_size = self.blobs[self.inputs[0]].data.shape[3]    # assumes a square input, as pycaffe
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        half_h = (window[2] - window[0] + 1) / 2.0
        half_w = (window[3] - window[1] + 1) / 2.0
        center = (window[0] + half_h, window[1] + half_w)
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        pad_y = int(round(max(0, -box[0]) * scale_h))          # the part beyond the image, in output pixels
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h = box[2] - box[0] + 1
        clip_w = box[3] - box[1] + 1
        if not (clip_h > 0 and clip_w > 0) or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"Detector.crop: window {window.tolist()} lies outside the {im_h}x{im_w} image")
        crop_h = min(int(round(clip_h * scale_h)), crop_size - pad_y)
        crop_w = min(int(round(clip_w * scale_w)), crop_size - pad_x)
        context = im[int(box[0]):int(box[2]), int(box[1]):int(box[3])]
        context = caffe_io.resize_image(context, (crop_h, crop_w))
        out = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        out[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return out

    def configure_crop(self, context_pad):
        """Set the crop size (the net's input, H x W x K) and ``context_pad``; with context, also the mean
        in raw input space (``crop_mean``) that fills context beyond the image."""
        in_ = self.inputs[0]
        tpose = self.transformer.transpose[in_]
        inv_tpose = [tpose[t] for t in tpose]
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_tpose]
        self.context_pad = context_pad
        if not self.context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = mean.copy().transpose(inv_tpose)
        channel_order = self.transformer.channel_swap.get(in_)
        if channel_order is not None:
            crop_mean = crop_mean[:, :, [list(channel_order).index(i) for i in range(crop_mean.shape[2])]]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
