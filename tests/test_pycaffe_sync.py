"""The device path of a blob (Caffe's SyncedMemory: HEAD_AT_CPU, HEAD_AT_GPU, SYNCED), checked on the CPU by
forcing the host mirror on and counting the host<->device copies."""
import numpy as np
import pytest
import torch
from google.protobuf import text_format

import torchcaffe as caffe
from torchcaffe import blob as blob_mod
from torchcaffe.blob import HEAD_AT_CPU, HEAD_AT_GPU, SYNCED, Blob
from torchcaffe.proto import caffe_pb2


@pytest.fixture
def transfers(monkeypatch):
    """Count blob.py's device->host (down) and host->device (up) copies, with the mirror forced on."""
    count = {"down": 0, "up": 0}
    down, up = blob_mod._download, blob_mod._upload

    def counted_down(dst, src):
        count["down"] += 1
        down(dst, src)

    def counted_up(dst, src):
        count["up"] += 1
        up(dst, src)

    monkeypatch.setattr(blob_mod, "MIRROR_CPU", True)
    monkeypatch.setattr(blob_mod, "_download", counted_down)
    monkeypatch.setattr(blob_mod, "_upload", counted_up)
    yield count


def test_host_write_does_not_download_first(transfers):
    b = Blob((3, 4))
    b.data_t = torch.ones(3, 4)          # the device copy is the newest
    b.data = np.full((3, 4), 2.0)        # overwritten from the host: nothing to fetch
    assert transfers == {"down": 0, "up": 0}
    assert b._data.head == HEAD_AT_CPU
    assert torch.equal(b.data_t, torch.full((3, 4), 2.0))
    assert transfers == {"down": 0, "up": 1}


def test_reads_keep_both_copies_in_sync(transfers):
    b = Blob((5,))
    b.data_t = torch.arange(5.0)
    np.testing.assert_array_equal(b.read_data(), np.arange(5.0))
    assert b._data.head == SYNCED
    b.read_data()
    b.data_t  # the device reads it: no upload, the copies agree
    b.read_data()
    assert transfers == {"down": 1, "up": 0}


def test_device_writes_in_place_are_seen(transfers):
    b = Blob((2,))
    b.read_data()
    b.data_t.add_(3)  # a layer or the solver writes the device memory in place
    assert b._data.device_newer()
    np.testing.assert_array_equal(b.read_data(), [3, 3])
    assert transfers == {"down": 2, "up": 0}


def test_pycaffe_data_marks_the_host_copy_written(transfers):
    b = Blob((2,))
    arr = b.data           # Caffe's mutable_cpu_data
    assert b._data.head == HEAD_AT_CPU
    arr[...] = 4
    assert torch.equal(b.data_t, torch.full((2,), 4.0))
    assert b._data.head == SYNCED
    b.data_t
    assert transfers == {"down": 1, "up": 1}


def test_writing_the_whole_device_array_skips_the_stale_host_copy(transfers):
    b = Blob((2,))
    b.data[...] = 1        # HEAD_AT_CPU
    b.data_t = torch.full((2,), 9.0)   # a layer's output overwrites it all
    assert b._data.head == HEAD_AT_GPU
    assert transfers["up"] == 0
    np.testing.assert_array_equal(b.data, [9, 9])


NET = """
name: "s"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
"""


def make_net():
    p = caffe_pb2.NetParameter()
    text_format.Parse(NET, p)
    return caffe.Net(p, caffe.TEST)


def test_snapshots_download_once_and_upload_nothing(transfers, tmp_path):
    net = make_net()
    net.forward()
    before = dict(transfers)
    net.save(str(tmp_path / "a.caffemodel"))
    net.save(str(tmp_path / "b.caffemodel"))
    net.save_hdf5(str(tmp_path / "c.h5"))
    assert transfers["down"] - before["down"] == 2   # weight and bias, once each
    net.forward()
    assert transfers["up"] == before["up"]            # no re-upload after the snapshots
    assert (tmp_path / "a.caffemodel").read_bytes() == (tmp_path / "b.caffemodel").read_bytes()


def test_forward_moves_only_what_it_returns(transfers):
    net = make_net()
    for _ in range(3):
        net.forward_loss()  # the runtime's forward (the solver's): nothing crosses
    assert transfers == {"down": 0, "up": 0}
    for _ in range(3):
        net.forward()  # pycaffe's returns the output on the host: one download each, nothing uploaded
    assert transfers == {"down": 3, "up": 0}
