"""Caffe's upgrades of old nets and solvers (torchcaffe.upgrade), checked against files Caffe itself wrote."""
import logging
import os

import numpy as np
import pytest

from torchcaffe import protoio, upgrade
from torchcaffe.proto import caffe_pb2

from format_helpers import V1_DIR, golden, net_from_text

V1 = caffe_pb2.V1LayerParameter


# ---------------------------------------------------------------------------------------------------------
# The golden V1 net: Caffe's own upgrade_net_proto_text output
# ---------------------------------------------------------------------------------------------------------

def test_v1_prototxt_upgrade_equals_caffes_own():
    v1 = protoio.read_prototxt(os.path.join(V1_DIR, "v1_net.prototxt"), caffe_pb2.NetParameter)
    assert len(v1.layers) == 11 and len(v1.layer) == 0
    assert upgrade.upgrade_net(v1) is True
    expected = protoio.read_prototxt(os.path.join(V1_DIR, "v1_net_upgraded_by_caffe.prototxt"),
                                     caffe_pb2.NetParameter)
    assert v1 == expected, protoio.to_prototxt_string(v1)


def test_read_net_param_upgrades_v1_file():
    net = protoio.read_net_param(os.path.join(V1_DIR, "v1_net.prototxt"))
    expected = protoio.read_prototxt(os.path.join(V1_DIR, "v1_net_upgraded_by_caffe.prototxt"),
                                     caffe_pb2.NetParameter)
    assert net == expected
    assert not upgrade.net_needs_upgrade(net)


def test_current_nets_are_left_alone():
    for path in (os.path.join(V1_DIR, "v1_net_upgraded_by_caffe.prototxt"),
                 golden("data_and_colornet", "narrow_colornet_deploy.prototxt"),
                 golden("layers", "layers.prototxt")):
        net = protoio.read_prototxt(path, caffe_pb2.NetParameter)
        before = caffe_pb2.NetParameter()
        before.CopyFrom(net)
        assert upgrade.upgrade_net(net) is False, path
        assert net == before


def _expected_param_shapes():
    # 2x3x16x16 input; conv 3x3 pad 1 keeps 16x16, pools halve: fc6 sees 8 channels x 4 x 4 = 128.
    return {"conv1_1": [(6, 3, 3, 3), (6,)], "conv2_1": [(8, 6, 3, 3), (8,)],
            "fc6": [(12, 128), (12,)], "fc8": [(5, 12), (5,)]}


def test_v1_caffemodel_upgrade_matches_upgraded_prototxt():
    raw = protoio.read_binaryproto(os.path.join(V1_DIR, "v1_net.caffemodel"), caffe_pb2.NetParameter)
    assert len(raw.layers) == 11 and len(raw.layer) == 0
    weights = protoio.read_net_weights(os.path.join(V1_DIR, "v1_net.caffemodel"))
    assert len(weights.layers) == 0 and len(weights.input) == 0 and len(weights.input_dim) == 0
    ref = protoio.read_prototxt(os.path.join(V1_DIR, "v1_net_upgraded_by_caffe.prototxt"),
                                caffe_pb2.NetParameter)
    assert [(l.name, l.type) for l in weights.layer] == [(l.name, l.type) for l in ref.layer]
    assert [list(l.bottom) for l in weights.layer] == [list(l.bottom) for l in ref.layer]
    assert [list(l.top) for l in weights.layer] == [list(l.top) for l in ref.layer]
    shapes = _expected_param_shapes()
    for layer, raw_layer in zip(weights.layer[1:], raw.layers):
        assert len(layer.blobs) == len(shapes.get(layer.name, []))
        for bp, shape, raw_bp in zip(layer.blobs, shapes.get(layer.name, []), raw_layer.blobs):
            # legacy num/channels/height/width blobs, matched as Caffe's Blob::ShapeEquals does
            assert not bp.HasField("shape")
            assert protoio.shape_equals(shape, bp), (layer.name, shape, protoio.proto_shape(bp))
            arr = protoio.proto_to_array(bp)
            assert arr.dtype == np.float32 and arr.size == int(np.prod(shape))
            np.testing.assert_array_equal(arr.ravel(), np.array(raw_bp.data, dtype=np.float32))
    # the Input layer carries the net-level input dims of the caffemodel
    assert weights.layer[0].type == "Input"
    assert list(weights.layer[0].input_param.shape[0].dim) == [2, 3, 16, 16]


# ---------------------------------------------------------------------------------------------------------
# V1 -> V2 details
# ---------------------------------------------------------------------------------------------------------

def test_v1_type_names_cover_every_enum_value_exactly():
    enum_values = {v.number for v in V1.DESCRIPTOR.enum_types_by_name["LayerType"].values}
    assert set(upgrade.V1_LAYER_TYPE_NAMES) == enum_values
    spot = {V1.NONE: "", V1.ABSVAL: "AbsVal", V1.BNLL: "BNLL", V1.IM2COL: "Im2col", V1.TANH: "TanH",
            V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.HDF5_DATA: "HDF5Data", V1.MVN: "MVN", V1.LRN: "LRN",
            V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.DUMMY_DATA: "DummyData",
            V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", V1.DECONVOLUTION: "Deconvolution"}
    for k, v in spot.items():
        assert upgrade.V1_LAYER_TYPE_NAMES[k] == v


def test_v1_params_and_every_layer_param_are_carried_over():
    v1_params = [f.name for f in V1.DESCRIPTOR.fields if f.name.endswith("_param")]
    # the copied list is exactly Caffe's, and it covers every *_param field the V1 message has
    assert sorted(v1_params) == sorted(upgrade._V1_COPIED_PARAMS)
    net = caffe_pb2.NetParameter()
    l = net.layers.add()
    l.name = "everything"
    l.type = V1.CONVOLUTION
    l.bottom.append("a")
    l.top.extend(["b", "c"])
    l.include.add().phase = caffe_pb2.TRAIN
    l.exclude.add().stage.append("deploy")
    l.param.extend(["w_shared", "b_shared"])
    l.blob_share_mode.extend([V1.PERMISSIVE])
    l.blobs_lr.extend([1.0, 2.0, 3.0])
    l.weight_decay.extend([0.5])
    l.loss_weight.extend([0.25, 4.0])
    for name in v1_params:
        getattr(l, name).SetInParent()
    l.convolution_param.num_output = 7
    l.convolution_param.kernel_size.append(3)
    l.transform_param.mean_value.extend([1.0, 2.0])
    b = l.blobs.add()
    b.num, b.channels, b.height, b.width = 1, 1, 1, 2
    b.data.extend([1.0, 2.0])
    assert upgrade.upgrade_net(net)
    assert len(net.layers) == 0 and len(net.layer) == 1
    out = net.layer[0]
    assert out.name == "everything" and out.type == "Convolution"
    assert list(out.bottom) == ["a"] and list(out.top) == ["b", "c"]
    assert out.include[0].phase == caffe_pb2.TRAIN and list(out.exclude[0].stage) == ["deploy"]
    assert len(out.param) == 3
    assert out.param[0].name == "w_shared" and out.param[1].name == "b_shared"
    assert not out.param[2].HasField("name")
    assert out.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not out.param[1].HasField("share_mode")
    assert [p.lr_mult for p in out.param] == [1.0, 2.0, 3.0]
    assert out.param[0].decay_mult == 0.5
    assert not out.param[1].HasField("decay_mult") and out.param[1].decay_mult == 1.0
    assert list(out.loss_weight) == [0.25, 4.0]
    for name in v1_params:
        assert out.HasField(name), name
    assert out.convolution_param.num_output == 7 and list(out.convolution_param.kernel_size) == [3]
    assert list(out.transform_param.mean_value) == [1.0, 2.0]
    assert len(out.blobs) == 1 and out.blobs[0] == l.blobs[0]


def test_v1_none_type_and_layer_entries_dropped(caplog):
    net = net_from_text('layer { name: "new" type: "ReLU" } layers { name: "old" type: NONE }')
    with caplog.at_level(logging.WARNING, logger="torchcaffe.upgrade"):
        assert upgrade.upgrade_net(net)
    assert [(l.name, l.type) for l in net.layer] == [("old", "")]
    assert net.layer[0].HasField("type")
    assert "dropped" in caplog.text


def test_data_transformation_fields_move_to_transform_param():
    net = net_from_text('''
      layers { name: "d" type: DATA top: "x"
               data_param { source: "db" batch_size: 4 scale: 0.5 mean_file: "m" crop_size: 7 mirror: true } }
      layers { name: "i" type: IMAGE_DATA top: "y" image_data_param { source: "list" crop_size: 3 } }
      layers { name: "w" type: WINDOW_DATA top: "z" window_data_param { source: "win" mirror: false scale: 2 } }
      layers { name: "c" type: CONVOLUTION bottom: "x" top: "c" convolution_param { num_output: 1 } }
      layers { name: "bare" type: DATA top: "q" }''')
    assert upgrade.net_needs_data_upgrade(net)
    assert upgrade.upgrade_net(net)
    d, i, w, c, bare = net.layer
    # Caffe touches every data layer's param messages through mutable_*: present even when empty
    assert bare.HasField("data_param") and bare.HasField("transform_param")
    assert not c.HasField("transform_param")
    assert d.type == "Data" and i.type == "ImageData" and w.type == "WindowData"
    assert d.transform_param == caffe_pb2.TransformationParameter(scale=0.5, mean_file="m", crop_size=7,
                                                                  mirror=True)
    for f in ("scale", "mean_file", "crop_size", "mirror"):
        assert not d.data_param.HasField(f)
    assert d.data_param.source == "db" and d.data_param.batch_size == 4
    assert i.transform_param.crop_size == 3 and not i.image_data_param.HasField("crop_size")
    assert w.transform_param.HasField("mirror") and w.transform_param.scale == 2
    assert not w.window_data_param.HasField("scale") and w.window_data_param.source == "win"


# ---------------------------------------------------------------------------------------------------------
# V0 -> V1 -> V2
# ---------------------------------------------------------------------------------------------------------

V0_NET = '''
name: "v0net"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
force_backward: true
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 group: 1 biasterm: false
                 weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0.5 }
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
         bottom: "pad1" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.5 beta: 0.25 k: 2 }
         bottom: "pool1" top: "norm1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 10 } bottom: "norm1" top: "fc" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "fc" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
'''

V0_NET_UPGRADED = '''
name: "v0net"
force_backward: true
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 bias_term: false pad: 2 kernel_size: 3 group: 1 stride: 2
                            weight_filler { type: "gaussian" std: 0.01 }
                            bias_filler { type: "constant" value: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.25 k: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "norm1" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


def test_v0_net_with_padding_layer():
    net = net_from_text(V0_NET)
    assert upgrade.net_needs_v0_to_v1_upgrade(net)
    assert upgrade.upgrade_net(net)
    assert net == net_from_text(V0_NET_UPGRADED), protoio.to_prototxt_string(net)


def test_v0_data_layer_fields():
    net = net_from_text('''
      layers { layer { name: "data" type: "data" source: "db" batchsize: 16 cropsize: 8 mirror: true
                       meanfile: "m.binaryproto" scale: 0.5 rand_skip: 3 } top: "data" top: "label" }
      layers { layer { name: "loss" type: "softmax_loss" } bottom: "data" bottom: "label" }''')
    assert upgrade.upgrade_net(net)
    assert net == net_from_text('''
      layer { name: "data" type: "Data" top: "data" top: "label"
              transform_param { scale: 0.5 mean_file: "m.binaryproto" crop_size: 8 mirror: true }
              data_param { source: "db" batch_size: 16 rand_skip: 3 } }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" }''')


def test_v0_misplaced_parameter_is_logged_and_dropped(caplog):
    net = net_from_text('input: "x" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1 '
                        'layers { layer { name: "r" type: "relu" num_output: 5 } bottom: "x" top: "x" }')
    with caplog.at_level(logging.WARNING, logger="torchcaffe.upgrade"):
        assert upgrade.upgrade_net(net)
    assert [l.type for l in net.layer] == ["Input", "ReLU"]
    assert "num_output" in caplog.text


def test_v0_fatal_cases_raise(tmp_path):
    bad_type = 'layers { layer { name: "x" type: "sparkle" } top: "x" }'
    with pytest.raises(upgrade.UpgradeError, match="sparkle"):
        upgrade.upgrade_net(net_from_text(bad_type))
    unknown_bottom = 'layers { layer { name: "r" type: "relu" } bottom: "nowhere" top: "r" }'
    with pytest.raises(upgrade.UpgradeError, match="nowhere"):
        upgrade.upgrade_net(net_from_text(unknown_bottom))
    pad_into_relu = ('input: "d" layers { layer { name: "p" type: "padding" pad: 1 } bottom: "d" top: "p" } '
                     'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }')
    with pytest.raises(upgrade.UpgradeError, match="padding"):
        upgrade.upgrade_net(net_from_text(pad_into_relu))
    # through the file reader: a one-line CaffeFormatError naming the file
    p = tmp_path / "v0.prototxt"
    p.write_text(bad_type)
    with pytest.raises(protoio.CaffeFormatError) as e:
        protoio.read_net_param(p)
    assert str(e.value).startswith(f"{p}: ") and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------------
# Net inputs, BatchNorm, solvers
# ---------------------------------------------------------------------------------------------------------

def test_input_shape_fields_become_first_input_layer():
    net = net_from_text('''
      input: "a" input: "b"
      input_shape { dim: 2 dim: 5 } input_shape { dim: 2 }
      layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "c" }
      layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }''')
    assert upgrade.upgrade_net(net)
    assert net == net_from_text('''
      layer { name: "input" type: "Input" top: "a" top: "b"
              input_param { shape { dim: 2 dim: 5 } shape { dim: 2 } } }
      layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "c" }
      layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }''')


def test_input_without_dims_is_dropped_and_bad_dims_raise():
    net = net_from_text('input: "data" layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    assert upgrade.upgrade_net(net)
    assert len(net.input) == 0 and [l.name for l in net.layer] == ["r"]
    with pytest.raises(upgrade.UpgradeError, match="input_dim"):
        upgrade.upgrade_net(net_from_text('input: "a" input: "b" input_dim: 1 input_dim: 2 '
                                          'input_dim: 3 input_dim: 4 input_dim: 5'))


def test_batchnorm_param_specs_upgrade():
    net = net_from_text('''
      layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
              param { name: "m" lr_mult: 1 } param { lr_mult: 2 decay_mult: 3 } param { lr_mult: 0 } }
      layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "x" param { lr_mult: 1 } }''')
    assert upgrade.net_needs_batchnorm_upgrade(net)
    assert upgrade.upgrade_net(net)
    bn, bn2 = net.layer
    assert [(p.lr_mult, p.decay_mult) for p in bn.param] == [(0.0, 0.0)] * 3
    assert all(p.HasField("lr_mult") and p.HasField("decay_mult") for p in bn.param)
    assert bn.param[0].name == "m"
    assert len(bn2.param) == 1 and bn2.param[0].lr_mult == 1.0  # only exactly three specs are upgraded
    assert upgrade.upgrade_net(net) is False


@pytest.mark.parametrize("enum_name,type_name", [("SGD", "SGD"), ("NESTEROV", "Nesterov"),
                                                 ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
                                                 ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_upgrade(tmp_path, enum_name, type_name):
    p = tmp_path / "solver.prototxt"
    p.write_text(f'net: "n.prototxt"\nbase_lr: 0.1\nsolver_type: {enum_name}\n')
    s = protoio.read_solver_param(p)
    assert s.type == type_name and s.HasField("type") and not s.HasField("solver_type")
    assert s.net == "n.prototxt"


def test_solver_upgrade_rules(tmp_path):
    s = caffe_pb2.SolverParameter(type="Adam")
    assert upgrade.upgrade_solver(s) is False and s.type == "Adam"
    both = caffe_pb2.SolverParameter(type="Adam", solver_type=caffe_pb2.SolverParameter.NESTEROV)
    with pytest.raises(upgrade.UpgradeError, match="both"):
        upgrade.upgrade_solver(both)
    p = tmp_path / "both.prototxt"
    p.write_text('type: "Adam"\nsolver_type: ADAM\n')
    with pytest.raises(protoio.CaffeFormatError, match=r"both\.prototxt: .*cannot both"):
        protoio.read_solver_param(p)
