"""``caffe.io``: the module ``torchcaffe.io`` itself (pycaffe's name for it)."""
import sys

from torchcaffe import io as _module

sys.modules[__name__] = _module
