"""pycaffe's ``caffe.io``: image loading and resizing, the Transformer, and proto / Datum <-> array helpers.

Names, arguments and results follow BVLC Caffe's python/caffe/io.py, including its conventions:
``blobproto_to_array`` gives float64 arrays, ``datum_to_array`` gives uint8 (raw pixels) or float64,
``Transformer.preprocess`` runs resize -> transpose -> channel swap -> raw scale -> mean -> input scale and
``deprocess`` the inverse.  Where the original depends on the scikit-image of its day, the behaviour of that
day is pinned (see :func:`resize_image`).  Additions: ``datum_to_array`` also decodes ``encoded`` Datums
(with OpenCV, as Caffe's data layer does), and the misspelt ``arraylist_to_blobprotovecor_str`` of
pycaffe up to rc3 is kept as an alias.
"""
from __future__ import annotations

import numpy as np

from .proto import caffe_pb2

__all__ = [
    "blobproto_to_array", "array_to_blobproto", "arraylist_to_blobprotovector_str",
    "arraylist_to_blobprotovecor_str", "blobprotovector_str_to_arraylist", "array_to_datum",
    "datum_to_array", "Transformer", "load_image", "resize_image", "oversample",
]


# ---------------------------------------------------------------------------------------------------------
# proto / datum / ndarray conversion
# ---------------------------------------------------------------------------------------------------------

def blobproto_to_array(blob, return_diff=False):
    """The blob's data (or, with ``return_diff``, its diff) as a float64 array, shaped by the legacy
    num/channels/height/width fields when any is set, else by ``shape.dim``."""
    values = blob.diff if return_diff else blob.data
    arr = np.array(values, dtype=np.float64)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return arr.reshape(blob.num, blob.channels, blob.height, blob.width)
    return arr.reshape(tuple(blob.shape.dim))


def array_to_blobproto(arr, diff=None):
    """A BlobProto of any-dimensional ``arr`` (``shape`` field, float data) and, if given, ``diff`` (of the
    same size; not checked, as in pycaffe)."""
    from .protoio import array_to_proto

    arr = np.asarray(arr)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64)  # pycaffe: arr.astype(float), stored as float
    blob = array_to_proto(arr)
    if diff is not None:
        from .protoio import _packed_floats

        blob.MergeFromString(_packed_floats(6, np.asarray(diff)))
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """Serialize a list of arrays as a BlobProtoVector (bytes)."""
    vec = caffe_pb2.BlobProtoVector()
    for arr in arraylist:
        vec.blobs.add().CopyFrom(array_to_blobproto(arr))
    return vec.SerializeToString()


#: The misspelt name of pycaffe up to rc3 (fixed in 2016, before rc4), kept for old scripts.
arraylist_to_blobprotovecor_str = arraylist_to_blobprotovector_str


def blobprotovector_str_to_arraylist(str):  # noqa: A002  (pycaffe's parameter name)
    """Parse a serialized BlobProtoVector into a list of arrays (see :func:`blobproto_to_array`)."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(str)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum from a 3-D (C x H x W) array: uint8 arrays go to ``data`` as raw bytes, anything else to
    ``float_data``; ``label`` is set only when given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError('Incorrect array shape.')
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(np.asarray(arr, dtype=np.float64).ravel().tolist())
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum):
    """The Datum's pixels as C x H x W: uint8 from ``data`` (float64 from ``float_data``).  The label is not
    returned (read ``datum.label``).

    An ``encoded`` Datum (a PNG/JPEG in ``data``) is decoded with OpenCV in its native colour (Caffe's
    DecodeDatumToCVMatNative: gray stays 1 channel, colour is BGR) and returned as uint8 C x H x W.
    """
    if datum.encoded:
        import cv2

        buf = np.frombuffer(datum.data, dtype=np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_ANYCOLOR) if buf.size else None
        if img is None:
            raise ValueError("datum_to_array: the encoded image in this Datum cannot be decoded")
        if img.ndim == 2:
            img = img[:, :, np.newaxis]
        return np.ascontiguousarray(img.transpose(2, 0, 1))
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).copy().reshape(
            datum.channels, datum.height, datum.width)
    return np.array(datum.float_data, dtype=np.float64).reshape(datum.channels, datum.height, datum.width)


# ---------------------------------------------------------------------------------------------------------
# Pre-processing
# ---------------------------------------------------------------------------------------------------------

class Transformer:
    """Transform input for feeding into a Net (pycaffe's ``caffe.io.Transformer``).

    ``inputs``: ``{input name: input blob shape}`` (e.g. ``{'data': net.blobs['data'].data.shape}``).
    """

    def __init__(self, inputs):
        self.inputs = inputs
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def __check_input(self, in_):
        if in_ not in self.inputs:
            raise Exception('{} is not one of the net inputs: {}'.format(in_, self.inputs))

    def preprocess(self, in_, data):
        """Format ``data`` (H' x W' x K) for Caffe: float32, resize to the input's H x W, transpose,
        channel swap, times raw_scale, minus mean, times input_scale.  Returns K x H x W.

        (pycaffe may scale the caller's array in place when no step copies it first; this one never
        writes into ``data``.  The values are the same.)
        """
        self.__check_input(in_)
        caffe_in = data.astype(np.float32, copy=False)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if tuple(caffe_in.shape[:2]) != tuple(in_dims):
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[channel_swap, :, :]
        if caffe_in is data or np.may_share_memory(caffe_in, data):
            caffe_in = caffe_in.copy()
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data):
        """Invert :meth:`preprocess` (except the resize); the result is squeezed as in pycaffe."""
        self.__check_input(in_)
        decaf_in = data.copy().squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """The axis order taking H x W x K input to the net's K x H x W (usually ``(2, 0, 1)``)."""
        self.__check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception('Transpose order needs to have the same number of '
                            'dimensions as the input.')
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """The channel order after transposing, e.g. ``(2, 1, 0)`` for RGB -> BGR."""
        self.__check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception('Channel swap needs to have the same number of '
                            'dimensions as the input channels.')
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Multiply the raw input by ``scale`` (e.g. 255 for models trained on [0, 255] images);
        applied before the mean is subtracted."""
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """The mean to subtract: one value per channel (1-D, K values) or a K x H x W (or H x W) array of
        the input's shape."""
        self.__check_input(in_)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError('Mean channels incompatible with input.')
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ValueError('Mean shape invalid')
            if ms != tuple(self.inputs[in_][1:]):
                raise ValueError('Mean shape incompatible with input shape.')
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply the preprocessed input by ``scale``; applied after the mean is subtracted."""
        self.__check_input(in_)
        self.input_scale[in_] = scale


# ---------------------------------------------------------------------------------------------------------
# Image IO
# ---------------------------------------------------------------------------------------------------------

def load_image(filename, color=True):
    """Load an image as float32 in [0, 1], H x W x 3 (RGB) when ``color``, else H x W x 1 (gray; a colour
    file is converted to intensity).  A gray file with ``color`` is tiled to 3 channels; alpha is dropped."""
    import skimage
    import skimage.io

    img = skimage.img_as_float(skimage.io.imread(filename, as_gray=not color)).astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def resize_image(im, new_dims, interp_order=1):
    """Resize H x W x K ``im`` to ``new_dims`` = (height, width) with spline interpolation of
    ``interp_order`` (1: bilinear); returns float32 (new_dims[0], new_dims[1], K).

    As pycaffe: 1- and 3-channel images are scaled to [0, 1], resized with scikit-image and scaled back
    (a constant image stays constant); other channel counts go through ``scipy.ndimage.zoom``.
    scikit-image's resize is called as the scikit-image of Caffe's day behaved by default -- no
    anti-aliasing, ``mode='constant'`` (zero beyond the border, before scaling back) -- so results do not
    change with the installed version's newer defaults.
    """
    if im.shape[-1] == 1 or im.shape[-1] == 3:
        im_min, im_max = im.min(), im.max()
        if im_max > im_min:
            from skimage.transform import resize

            im_std = (im - im_min) / (im_max - im_min)
            resized_std = resize(im_std, new_dims, order=interp_order, mode="constant", cval=0,
                                 clip=True, preserve_range=False, anti_aliasing=False)
            resized_im = resized_std * (im_max - im_min) + im_min
        else:
            ret = np.empty((new_dims[0], new_dims[1], im.shape[-1]), dtype=np.float32)
            ret.fill(im_min)
            return ret
    else:
        from scipy.ndimage import zoom

        scale = tuple(np.array(new_dims, dtype=float) / np.array(im.shape[:2]))
        resized_im = zoom(im, scale + (1,), order=interp_order)
    return resized_im.astype(np.float32)


def oversample(images, crop_dims):
    """Ten crops per image -- the four corners and the centre, and their mirror images.

    ``images``: sequence of H x W x K arrays (all of the first one's shape); ``crop_dims``: (height, width).
    Returns float32 (10 * N, height, width, K): for each image its 5 crops, then those 5 mirrored.
    """
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    ch, cw = int(crop_dims[0]), int(crop_dims[1])
    im_center = im_shape[:2] / 2.0
    corners = [(i, j) for i in (0, im_shape[0] - ch) for j in (0, im_shape[1] - cw)]
    boxes = np.empty((5, 4), dtype=int)
    for k, (i, j) in enumerate(corners):
        boxes[k] = (i, j, i + ch, j + cw)
    # The centre crop's corners are truncated towards zero, as pycaffe's assignment into an int array does.
    boxes[4] = np.concatenate([im_center - crop_dims / 2.0, im_center + crop_dims / 2.0])
    crops = np.empty((10 * len(images), ch, cw, im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for box in boxes:
            crops[ix] = im[box[0]:box[2], box[1]:box[3], :]
            ix += 1
        for box in boxes:
            crops[ix] = im[box[0]:box[2], box[1]:box[3], :][:, ::-1, :]
            ix += 1
    return crops
