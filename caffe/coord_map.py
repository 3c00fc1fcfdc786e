"""``caffe.coord_map``: the module ``torchcaffe.coord_map`` itself (pycaffe's name for it)."""
import sys

from torchcaffe import coord_map as _module

sys.modules[__name__] = _module
