"""MemoryData (with Net.set_input_arrays) and HDF5Output against BVLC Caffe's recorded behaviour
(tests/bvlc_golden/io_layers.npz, written by tests/bvlc_golden/record_io_layers.py under BVLC's pycaffe)."""
import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest

import torchcaffe as caffe
from torchcaffe.layer import LayerError

HERE = Path(__file__).resolve().parent / "bvlc_golden"
_spec = importlib.util.spec_from_file_location("record_io_layers", HERE / "record_io_layers.py")
rec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rec)


@pytest.fixture(scope="module")
def gold():
    with np.load(HERE / "io_layers.npz") as z:
        return {k: z[k] for k in z.files}


def _net(tmp_path, text, name):
    p = tmp_path / name
    p.write_text(text)
    return caffe.Net(str(p), caffe.TEST)


def test_memory_data_batches_match_bvlc(tmp_path, gold):
    net = _net(tmp_path, rec.MEMORY_NET, "memory.prototxt")
    assert net.blobs["label"].data.shape == tuple(gold["mem_setup_label_shape"])
    data, labels = rec.memory_arrays()
    net.set_input_arrays(data, labels)
    for i in range(4):
        net.forward()
        for blob in ("data", "label", "scaled"):
            g = gold[f"mem_{blob}_{i}"]
            assert net.blobs[blob].data.shape == g.shape, blob
            np.testing.assert_array_equal(net.blobs[blob].data, g)
    data[2] += 100  # the layer serves the caller's array, not a copy
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, gold["mem_after_change"])


@pytest.mark.parametrize("case", sorted(rec.bad_calls()))
def test_set_input_arrays_errors_match_pycaffe(tmp_path, gold, case):
    net = _net(tmp_path, rec.MEMORY_NET, "memory.prototxt")
    d, l = rec.bad_calls()[case]
    with pytest.raises(RuntimeError) as e:
        net.set_input_arrays(d, l)
    assert f"RuntimeError: {e.value}" == str(gold[f"mem_err_{case}"])


def test_set_input_arrays_needs_memory_data_first(tmp_path, gold):
    text = rec.HDF5_NET.replace("FILE_A", str(tmp_path / "x.h5")).replace("FILE_B", str(tmp_path / "y.h5"))
    net = _net(tmp_path, text, "notmem.prototxt")
    with pytest.raises(RuntimeError) as e:
        net.set_input_arrays(*rec.memory_arrays())
    assert f"RuntimeError: {e.value}" == str(gold["mem_err_first_layer"])


def test_memory_data_forward_before_reset_is_an_error(tmp_path):
    net = _net(tmp_path, rec.MEMORY_NET, "memory.prototxt")
    with pytest.raises(LayerError, match="set_input_arrays"):
        net.forward()


def test_memory_data_needs_positive_sizes(tmp_path):
    with pytest.raises(ValueError, match="memory_data_param"):  # NetError naming the layer
        _net(tmp_path, rec.MEMORY_NET.replace("height: 2", "height: 0"), "bad.prototxt")


def test_memory_data_add_mat_vector_transforms(tmp_path):
    text = rec.MEMORY_NET.replace("top: \"label\"", "top: \"label\" transform_param { scale: 0.5 mean_value: 1 }")
    net = _net(tmp_path, text, "memory_t.prototxt")
    layer = net.layers[0]
    mats = [np.full((2, 1, 3), i, np.uint8) for i in range(2)]  # H x W x C
    layer.add_mat_vector(mats, [7, 8])
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[:, :, :, 0], [np.full((3, 2), -0.5), np.zeros((3, 2))])
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [7, 8])
    with pytest.raises(LayerError, match="multiple of the batch size"):
        layer.add_mat_vector(mats[:1], [1])


def test_hdf5_output_file_matches_bvlc(tmp_path, gold):
    fa, fb = tmp_path / "a.h5", tmp_path / "b.h5"
    text = rec.HDF5_NET.replace("FILE_A", str(fa)).replace("FILE_B", str(fb))
    net = _net(tmp_path, text, "hdf5.prototxt")
    with h5py.File(fa, "r") as f:  # setup creates the (empty) file, as Caffe's H5Fcreate does
        assert list(f.keys()) == []
    d, l, v = rec.hdf5_inputs()
    net.blobs["d"].data[...] = d
    net.blobs["l"].data[...] = l
    net.blobs["v"].data[...] = v
    net.forward()
    for tag, fn in (("a", fa), ("b", fb)):
        with h5py.File(fn, "r") as f:
            assert sorted(f.keys()) == list(gold[f"h5_{tag}_names"])
            for k in f:
                assert str(f[k].dtype) == str(gold[f"h5_{tag}_{k}_dtype"])
                assert f[k].shape == gold[f"h5_{tag}_{k}"].shape
                np.testing.assert_array_equal(f[k][...], gold[f"h5_{tag}_{k}"])
    assert bool(gold["h5_second_forward_fails"])
    with pytest.raises(LayerError, match="one batch per file"):
        net.forward()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary files left behind


def test_hdf5_output_unwritable_file_is_a_clear_error(tmp_path):
    text = rec.HDF5_NET.replace("FILE_A", str(tmp_path / "missing" / "a.h5")).replace("FILE_B", str(tmp_path / "b.h5"))
    with pytest.raises(ValueError, match="out4.*Failed to open HDF5 file"):
        _net(tmp_path, text, "hdf5.prototxt")


def test_memory_data_add_datum_vector_crops_in_test_phase(tmp_path):
    text = rec.MEMORY_NET.replace("top: \"label\"", "top: \"label\" transform_param { crop_size: 2 }").replace(
        "height: 2 width: 1", "height: 2 width: 2")
    net = _net(tmp_path, text, "memory_d.prototxt")
    imgs = [np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4) + i for i in range(4)]
    datums = [caffe.io.array_to_datum(im, label=i) for i, im in enumerate(imgs)]
    net.layers[0].add_datum_vector(datums)
    with pytest.raises(LayerError, match="consumed"):
        net.layers[0].add_datum_vector(datums)
    for b in range(2):
        net.forward()
        for k in range(2):  # TEST: the centre crop (offset (4 - 2) / 2 = 1)
            np.testing.assert_array_equal(net.blobs["data"].data[k], imgs[2 * b + k][:, 1:3, 1:3])
        np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [2 * b, 2 * b + 1])
    net.layers[0].add_datum_vector(datums[:2])  # consumed: new data may come
