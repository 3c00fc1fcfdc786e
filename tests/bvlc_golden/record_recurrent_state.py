"""Record how BVLC Caffe's LSTM and RNN carry their hidden state from one forward pass to the next.

Without ``expose_hidden`` BVLC copies the final state h_T (and c_T) of a forward pass into the initial state of
the next.  The single-pass golden cases (cases/lstm_*.prototxt, cases/rnn_*.prototxt) cannot show this, so this
script runs each net three times on fresh inputs whose cont is 1 at the first timestep (the state carries) and
writes ``recurrent_state.npz`` and ``NAME.caffemodel`` (BVLC's weights file of each net), compared by ``tests/test_bvlc_golden_recurrent_state.py``.  Run it with BVLC's
pycaffe from anywhere::

    PYTHONPATH=$BVLC/caffe/python GLOG_minloglevel=2 $BVLC/venv/bin/python tests/bvlc_golden/record_recurrent_state.py
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "recurrent_state.npz")
NETS = ("lstm_static", "rnn_basic")  # golden cases reused: their nets, weights from BVLC's fillers
PASSES = 3


def inputs(net_blobs, name, k):
    """The inputs of pass k: seeded by the case and pass; cont is 1 at t = 0 so the carried state matters."""
    r = np.random.RandomState(1000 * k + len(name))
    out = {}
    for b, shape in net_blobs.items():
        x = r.randint(0, 2, size=shape) if b == "cont" else r.randn(*shape)
        if b == "cont":
            x[0] = 1
        out[b] = x.astype(np.float32)
    return out


def main():
    import caffe

    caffe.set_random_seed(1701)
    out = {}
    for name in NETS:
        net = caffe.Net(os.path.join(HERE, "cases", f"{name}.prototxt"), caffe.TEST)
        for lname, blobs in net.params.items():
            for i, p in enumerate(blobs):
                out[f"{name}__param__{lname}__{i}"] = p.data.copy()
        net.save(os.path.join(HERE, f"{name}.caffemodel"))  # BVLC's own weights file of the unrolled net
        for k in range(PASSES):
            for b, x in inputs({b: net.blobs[b].data.shape for b in net.inputs}, name, k).items():
                net.blobs[b].data[...] = x
            net.forward()
            top = net.outputs[0]
            out[f"{name}__pass{k}"] = net.blobs[top].data.copy()
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}: {len(out)} arrays")


if __name__ == "__main__":
    main()
