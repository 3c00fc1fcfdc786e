"""``caffe.detector``: the module ``torchcaffe.detector`` itself (pycaffe's name for it)."""
import sys

from torchcaffe import detector as _module

sys.modules[__name__] = _module
