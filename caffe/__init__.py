"""``import caffe`` gives torchcaffe, for scripts written for BVLC's pycaffe.

This package only re-exports :mod:`torchcaffe`; its submodules are the torchcaffe modules themselves
(``caffe.proto.caffe_pb2 is torchcaffe.proto.caffe_pb2``), so both names can be mixed in one program.
A real BVLC pycaffe placed earlier on ``PYTHONPATH`` is found first and takes precedence, as Python's
import system resolves the first ``caffe`` on ``sys.path``.
"""
import torchcaffe as _tc
from torchcaffe import *  # noqa: F401,F403
from torchcaffe import __version__  # noqa: F401

from . import proto, pycaffe  # noqa: F401,E402


def __getattr__(name):
    return getattr(_tc, name)


def __dir__():
    return sorted(set(globals()) | set(dir(_tc)))
