"""``caffe.classifier``: the module ``torchcaffe.classifier`` itself (pycaffe's name for it)."""
import sys

from torchcaffe import classifier as _module

sys.modules[__name__] = _module
