"""Record BVLC Caffe's MemoryData (via pycaffe's set_input_arrays) and HDF5Output behaviour as golden data.

Run with BVLC's pycaffe (it imports ``caffe``)::

    PYTHONPATH=/path/to/caffe/python python tests/bvlc_golden/record_io_layers.py

It writes ``tests/bvlc_golden/io_layers.npz``, which ``tests/test_bvlc_golden_io_layers.py`` compares torchcaffe
against.  The nets are written by :func:`nets` below, which the test imports too, so both sides run the same
prototxt.  Every error case is run in a child process as well, because a failing CHECK aborts BVLC's process.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "io_layers.npz")

MEMORY_NET = """
name: "memory"
layer { name: "mem" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 2 channels: 3 height: 2 width: 1 } }
layer { name: "scaled" type: "Power" bottom: "data" top: "scaled" power_param { scale: 2 } }
"""

HDF5_NET = """
name: "hdf5out"
layer { name: "in" type: "Input" top: "d" top: "l" top: "v"
        input_param { shape { dim: 3 dim: 2 dim: 2 } shape { dim: 3 } shape { dim: 3 dim: 5 } } }
layer { name: "out4" type: "HDF5Output" bottom: "d" bottom: "l" hdf5_output_param { file_name: "FILE_A" } }
layer { name: "out2" type: "HDF5Output" bottom: "v" bottom: "l" hdf5_output_param { file_name: "FILE_B" } }
"""


def memory_arrays():
    data = (np.arange(6 * 3 * 2, dtype=np.float32).reshape(6, 3, 2, 1) * 0.5 - 3).astype(np.float32)
    labels = np.arange(6, dtype=np.float32) + 10
    return data, labels


def hdf5_inputs():
    r = np.random.RandomState(3)
    return (r.randn(3, 2, 2).astype(np.float32), np.array([1, 2, 3], np.float32),
            r.randn(3, 5).astype(np.float32))


#: set_input_arrays calls that pycaffe refuses: name -> (data, labels) builder
def bad_calls():
    data, labels = memory_arrays()
    return {
        "float64_data": (data.astype(np.float64), labels),
        "noncontiguous_data": (np.asfortranarray(data), labels),
        "data_3d": (data.reshape(6, 3, 2), labels),
        "wrong_channels": (np.zeros((6, 2, 2, 1), np.float32), labels),
        "wrong_height": (np.zeros((6, 3, 3, 1), np.float32), labels),
        "wrong_width": (np.zeros((6, 3, 2, 2), np.float32), labels),
        "label_count": (data, labels[:4]),
        "not_multiple": (data[:5], labels[:5]),
        "labels_float64": (data, labels.astype(np.float64)),
    }


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def record_memory(caffe, tmp, out):
    path = os.path.join(tmp, "memory.prototxt")
    _write(path, MEMORY_NET)
    net = caffe.Net(path, caffe.TEST)
    out["mem_setup_label_shape"] = np.array(net.blobs["label"].data.shape)
    data, labels = memory_arrays()
    net.set_input_arrays(data, labels)
    for i in range(4):  # 6 items, batch 2: wraps around after the third batch
        net.forward()
        out[f"mem_data_{i}"] = net.blobs["data"].data.copy()
        out[f"mem_label_{i}"] = net.blobs["label"].data.copy()
        out[f"mem_scaled_{i}"] = net.blobs["scaled"].data.copy()
    # the layer keeps the caller's array: a change shows in the next batch
    data[2] += 100  # after four batches the next one is items 2 and 3
    net.forward()
    out["mem_after_change"] = net.blobs["data"].data.copy()
    for name, (d, l) in bad_calls().items():
        try:
            net.set_input_arrays(d, l)
            out[f"mem_err_{name}"] = np.array("")
        except Exception as e:  # pycaffe raises RuntimeError
            out[f"mem_err_{name}"] = np.array(f"{type(e).__name__}: {e}")
    # a net whose first layer is not MemoryData
    path2 = os.path.join(tmp, "notmem.prototxt")
    _write(path2, HDF5_NET.replace("FILE_A", os.path.join(tmp, "x.h5")).replace("FILE_B", os.path.join(tmp, "y.h5")))
    net2 = caffe.Net(path2, caffe.TEST)
    try:
        net2.set_input_arrays(data, labels)
        out["mem_err_first_layer"] = np.array("")
    except Exception as e:
        out["mem_err_first_layer"] = np.array(f"{type(e).__name__}: {e}")


def record_hdf5(caffe, tmp, out):
    import h5py

    fa, fb = os.path.join(tmp, "a.h5"), os.path.join(tmp, "b.h5")
    path = os.path.join(tmp, "hdf5.prototxt")
    _write(path, HDF5_NET.replace("FILE_A", fa).replace("FILE_B", fb))
    net = caffe.Net(path, caffe.TEST)
    d, l, v = hdf5_inputs()
    net.blobs["d"].data[...] = d
    net.blobs["l"].data[...] = l
    net.blobs["v"].data[...] = v
    net.forward()
    del net  # closes the files
    for tag, fn in (("a", fa), ("b", fb)):
        with h5py.File(fn, "r") as f:
            out[f"h5_{tag}_names"] = np.array(sorted(f.keys()))
            for k in f:
                out[f"h5_{tag}_{k}"] = f[k][...]
                out[f"h5_{tag}_{k}_dtype"] = np.array(str(f[k].dtype))
    # a second forward pass fails in BVLC (the datasets exist): run it in a child, record that it failed
    code = ("import caffe, sys; n = caffe.Net(sys.argv[1], caffe.TEST); n.forward(); n.forward(); "
            "print('SECOND FORWARD OK')")
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    out["h5_second_forward_fails"] = np.array(r.returncode != 0 and "SECOND FORWARD OK" not in r.stdout)


def main():
    import caffe

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        record_memory(caffe, tmp, out)
        record_hdf5(caffe, tmp, out)
    np.savez_compressed(OUT, **out)
    for k in sorted(out):
        print(k, out[k].shape, out[k] if out[k].dtype.kind in "UbS" else "")


if __name__ == "__main__":
    main()
