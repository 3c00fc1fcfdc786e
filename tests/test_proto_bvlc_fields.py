"""torchcaffe's schema is BVLC Caffe's final master caffe.proto, field for field.

``tests/data/bvlc_caffe_proto_fields.json`` was made from BVLC's own file (git show
HEAD:src/caffe/proto/caffe.proto of BVLC/caffe master, compiled with protoc to a descriptor set): for every
message and nested message, each field's [number, label, type, type name, default]; for every enum, its
values.
"""
import json

import numpy as np
from google.protobuf import descriptor_pb2

from conftest import REPO
from torchcaffe.proto import caffe_pb2

BVLC = json.loads((REPO / "tests" / "data" / "bvlc_caffe_proto_fields.json").read_text())


def _ours():
    fd = descriptor_pb2.FileDescriptorProto()
    caffe_pb2.DESCRIPTOR.CopyToProto(fd)
    out = {}

    def walk(msgs, prefix):
        for m in msgs:
            name = prefix + m.name
            out[name] = {f.name: [f.number, f.label, f.type, f.type_name, f.default_value] for f in m.field}
            for e in m.enum_type:
                out[name + "." + e.name] = {v.name: v.number for v in e.value}
            walk(m.nested_type, name + ".")

    walk(fd.message_type, "")
    for e in fd.enum_type:
        out[e.name] = {v.name: v.number for v in e.value}
    return out


def _same_default(f_type, a, b):
    if f_type in (descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT, descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE) \
            and a and b:
        return np.float32(float(a)) == np.float32(float(b))
    return a == b


def test_every_bvlc_message_and_enum_is_declared():
    ours = _ours()
    assert sorted(set(BVLC) - set(ours)) == []
    assert sorted(set(ours) - set(BVLC)) == []


def test_every_field_matches_bvlc():
    ours = _ours()
    diffs = []
    for msg, fields in BVLC.items():
        mine = ours[msg]
        if sorted(fields) != sorted(mine):
            diffs.append((msg, sorted(set(fields) ^ set(mine))))
            continue
        for name, want in fields.items():
            got = mine[name]
            if not isinstance(want, list):  # enum value
                if got != want:
                    diffs.append((msg, name, got, want))
            elif got[:4] != want[:4] or not _same_default(want[2], got[4], want[4]):
                diffs.append((msg, name, got, want))
    assert diffs == []


def test_round_mode_and_new_layer_params_parse():
    from google.protobuf import text_format
    p = text_format.Parse('type: "Pooling" pooling_param { round_mode: FLOOR } clip_param { min: -1 max: 2 } '
                          'swish_param { beta: 0.5 } infogain_loss_param { axis: 2 }', caffe_pb2.LayerParameter())
    assert p.pooling_param.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert p.clip_param.max == 2 and p.swish_param.beta == 0.5 and p.infogain_loss_param.axis == 2
