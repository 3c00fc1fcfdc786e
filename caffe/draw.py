"""``caffe.draw``: the module ``torchcaffe.draw`` itself (pycaffe's name for it)."""
import sys

from torchcaffe import draw as _module

sys.modules[__name__] = _module
