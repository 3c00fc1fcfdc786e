"""``caffe.proto.caffe_pb2``: the module ``torchcaffe.proto.caffe_pb2`` itself."""
import sys

from torchcaffe.proto import caffe_pb2 as _module

sys.modules[__name__] = _module
