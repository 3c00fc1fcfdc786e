"""``caffe.proto``: torchcaffe's protobuf schema (``caffe.proto.caffe_pb2``)."""
from torchcaffe.proto import caffe_pb2  # noqa: F401
