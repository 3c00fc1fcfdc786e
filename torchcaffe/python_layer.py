"""pycaffe's Layer base class and the Python layer adapter -- being written."""


class Layer:
    """Base class of Python layers (pycaffe's ``caffe.Layer``)."""
