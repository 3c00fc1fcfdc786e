"""Shared helpers of the file-format tests (test_protoio, test_upgrade, test_caffe_io)."""
from __future__ import annotations

import os

from google.protobuf import text_format

from torchcaffe.proto import caffe_pb2

GOLDEN = os.environ.get("CAFFE_GOLDEN", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                       "caffe_golden"))
if not os.path.isdir(GOLDEN):
    GOLDEN = "/work/shared/caffe_golden"

V1_DIR = os.path.join(GOLDEN, "v1_upgrade")


def golden(*parts: str) -> str:
    return os.path.join(GOLDEN, *parts)


def net_from_text(text: str) -> "caffe_pb2.NetParameter":
    return text_format.Parse(text, caffe_pb2.NetParameter())


def leftovers(directory) -> list:
    """Names in ``directory`` that look like temporary files of an atomic write."""
    return sorted(n for n in os.listdir(directory) if ".tmp-" in n)
