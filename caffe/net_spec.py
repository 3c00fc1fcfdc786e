"""``caffe.net_spec``: the module ``torchcaffe.net_spec`` itself (pycaffe's name for it)."""
import sys

from torchcaffe import net_spec as _module

sys.modules[__name__] = _module
