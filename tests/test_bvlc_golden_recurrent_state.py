"""LSTM and RNN carry their hidden state across forward passes as BVLC Caffe does
(tests/bvlc_golden/recurrent_state.npz, recorded by tests/bvlc_golden/record_recurrent_state.py)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import torchcaffe as caffe
from conftest import assert_close

HERE = Path(__file__).resolve().parent / "bvlc_golden"
_spec = importlib.util.spec_from_file_location("record_recurrent_state", HERE / "record_recurrent_state.py")
rec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rec)


def _net(name, z):
    net = caffe.Net(str(HERE / "cases" / f"{name}.prototxt"), caffe.TEST)
    for lname, blobs in net.params.items():
        for i, p in enumerate(blobs):
            p.data[...] = z[f"{name}__param__{lname}__{i}"]
    return net


def _run(net, name, k):
    for b, x in rec.inputs({b: net.blobs[b].data.shape for b in net.inputs}, name, k).items():
        net.blobs[b].data[...] = x
    net.forward()
    return net.blobs[net.outputs[0]].data.copy()


@pytest.mark.parametrize("name", rec.NETS)
def test_state_carries_across_passes_as_in_bvlc(name):
    z = np.load(HERE / "recurrent_state.npz")
    net = _net(name, z)
    for k in range(rec.PASSES):
        assert_close(_run(net, name, k), z[f"{name}__pass{k}"], name=f"{name} pass {k}")
    # the carried state matters here: a fresh net on the last pass's inputs differs ...
    fresh = _run(_net(name, z), name, rec.PASSES - 1)
    assert np.abs(fresh - z[f"{name}__pass{rec.PASSES - 1}"]).max() > 1e-3
    # ... and reset() (Caffe's RecurrentLayer::Reset) zeroes the state like a fresh net
    layer = [l for l in net.layers if l.type in ("LSTM", "RNN")][0]
    layer.reset()
    np.testing.assert_allclose(_run(net, name, rec.PASSES - 1), fresh, rtol=0, atol=0)


@pytest.mark.parametrize("name", rec.NETS)
def test_bvlc_caffemodel_loads_with_its_blob_order(name):
    """BVLC's weights file of the net (its LSTM / RNN blobs are those of the unrolled internal net) loads by
    layer name and blob index, and the first pass matches BVLC's."""
    z = np.load(HERE / "recurrent_state.npz")
    net = caffe.Net(str(HERE / "cases" / f"{name}.prototxt"), caffe.TEST,
                    weights=str(HERE / f"{name}.caffemodel"))
    for lname, blobs in net.params.items():
        for i, p in enumerate(blobs):
            np.testing.assert_array_equal(p.data, z[f"{name}__param__{lname}__{i}"])
    assert_close(_run(net, name, 0), z[f"{name}__pass0"], name=f"{name} pass 0")
