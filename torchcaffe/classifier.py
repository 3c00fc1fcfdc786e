"""pycaffe's ``caffe.Classifier``: a TEST-phase ``Net`` that predicts class probabilities of images.

Each image (H x W x K, as :func:`torchcaffe.io.load_image` gives) is resized to ``image_dims``, then either
cut into the ten crops of :func:`torchcaffe.io.oversample` (corners, centre and their mirrors, predictions
averaged) or centre-cropped to the net's input size, pre-processed by a :class:`torchcaffe.io.Transformer`
and run through the net in batches (``Net.forward_all``).  The prediction is the net's first output.
"""
from __future__ import annotations

import numpy as np

from . import io as caffe_io
from .mode import TEST
from .net import Net


def configure_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """The :class:`~torchcaffe.io.Transformer` of a Classifier / Detector for ``net``'s first input:
    H x W x K -> K x H x W, then the given options."""
    in_ = net.inputs[0]
    t = caffe_io.Transformer({in_: net.blobs[in_].data.shape})
    t.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        t.set_mean(in_, mean)
    if input_scale is not None:
        t.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        t.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        t.set_channel_swap(in_, channel_swap)
    return t


class Classifier(Net):
    """``Classifier(model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None)``.

    ``image_dims``: (height, width) the images are resized to before cropping (default: the net's input
    size, i.e. the whole image); the other options configure ``self.transformer``.
    """

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = self.crop_dims if image_dims is None or len(image_dims) == 0 else image_dims

    def predict(self, inputs, oversample=True):
        """(N x C) class probabilities of the N images in ``inputs`` (a sequence of H x W x K arrays):
        the mean over the ten oversampled crops, or (``oversample=False``) of the centre crop."""
        if len(inputs) == 0:
            raise ValueError("Classifier.predict: no input images")
        h, w = int(self.image_dims[0]), int(self.image_dims[1])
        images = np.zeros((len(inputs), h, w, inputs[0].shape[2]), dtype=np.float32)
        for ix in range(len(inputs)):
            images[ix] = caffe_io.resize_image(inputs[ix], (h, w))
        if oversample:
            crops = caffe_io.oversample(images, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            box = (np.concatenate([center, center])
                   + np.concatenate([-self.crop_dims / 2.0, self.crop_dims / 2.0])).astype(int)
            crops = images[:, box[0]:box[2], box[1]:box[3], :]
        in_ = self.inputs[0]
        caffe_in = np.zeros((crops.shape[0], crops.shape[3]) + crops.shape[1:3], dtype=np.float32)
        for ix in range(len(crops)):
            caffe_in[ix] = self.transformer.preprocess(in_, crops[ix])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
