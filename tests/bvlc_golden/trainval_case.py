"""The fixed case on which BVLC Caffe and torchcaffe run the project's train_val nets.

Shared by ``make_trainval_golden.py`` (run inside a real BVLC Caffe, no torchcaffe) and the tests (run in
torchcaffe), so both sides build exactly the same net, batch, prior and weights.  Needs numpy and a
``caffe_pb2`` module (BVLC's or torchcaffe's: one schema) and protobuf's ``text_format``; nothing else.

* The net: the committed prototxt with the TRAIN ``Data`` layer replaced by an ``Input`` of the batch's
  shape and the TEST ``Data`` layer dropped (no LMDB needed); run in the TRAIN phase.
* The batch: BGR 0..255 integers, N x 3 x SIZE x SIZE: colour crops of smooth random images, and the last
  image gray (B = G = R), so the non-gray mask is exercised.
* The prior: a seeded random distribution over the 313 bins, written under the path the prototxt names
  (``data/prior_probs*.npy``), relative to the working directory, where ``PriorBoostLayer`` finds it as a
  Caffe user expects.
* The weights: every Convolution / Deconvolution whose weight filler is not ``constant`` gets seeded
  He-normal weights and small normal biases (seed from the layer name, so order does not matter); the
  fixed layers keep their constant fillers and BatchNorm its zero statistics.
"""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

#: name -> (prototxt, prior file name the prototxt uses, N, SIZE)
NETS = {
    "demo": ("prototxt/demo/colorization_train_val.prototxt", "data/prior_probs_demo.npy", 2, 32),
    "full": ("prototxt/colorization_train_val.prototxt", "data/prior_probs.npy", 2, 64),
}

#: Arrays up to this many values are recorded whole; larger ones as a fixed sample plus sums.
FULL_LIMIT = 1024
SAMPLE = 256


def golden_path(net: str) -> Path:
    return HERE / f"trainval_{net}.npz"


def prototxt_sha(net: str) -> str:
    return hashlib.sha256((REPO / NETS[net][0]).read_bytes()).hexdigest()


def batch(net: str) -> np.ndarray:
    _, _, n, size = NETS[net]
    rng = np.random.RandomState(1234)
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        coarse = rng.uniform(0, 255, size=(3, size // 8, size // 8))
        img = np.kron(coarse, np.ones((8, 8)))                     # blocky colour patches
        img += rng.uniform(-20, 20, size=img.shape)                 # and texture
        out[i] = np.clip(np.round(img), 0, 255)
    out[-1] = out[-1].mean(axis=0, keepdims=True).round()          # the last image gray
    return out


def prior(q: int = 313) -> np.ndarray:
    p = np.random.RandomState(99).gamma(0.5, size=q) + 1e-4
    return p / p.sum()


def save_prior(workdir, net: str) -> Path:
    """Write the case's prior where ``net``'s prototxt names it, relative to ``workdir``."""
    path = Path(workdir) / NETS[net][1]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, prior())
    return path


def input_net(net: str, caffe_pb2, text_format) -> str:
    """The prototxt text with Data replaced by an Input layer of the batch's shape (TRAIN)."""
    _, _, n, size = NETS[net]
    param = caffe_pb2.NetParameter()
    text_format.Merge((REPO / NETS[net][0]).read_text(), param)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for lp in param.layer:
        if lp.type == "Data":
            if any(r.phase == caffe_pb2.TEST for r in lp.include):
                continue
            new = out.layer.add()
            new.name, new.type = lp.name, "Input"
            new.top.extend(lp.top[:1])
            new.input_param.shape.add().dim.extend([n, 3, size, size])
        else:
            out.layer.add().CopyFrom(lp)
    return text_format.MessageToString(out)


def random_layers(text: str, caffe_pb2, text_format) -> list:
    """Names of the layers that get seeded random weights."""
    param = caffe_pb2.NetParameter()
    text_format.Merge(text, param)
    return [lp.name for lp in param.layer if lp.type in ("Convolution", "Deconvolution")
            and lp.convolution_param.weight_filler.type != "constant"]


def weight(layer: str, index: int, shape) -> np.ndarray:
    rng = np.random.RandomState((zlib.crc32(layer.encode()) + index) % (2 ** 32))
    shape = tuple(int(s) for s in shape)
    if index == 0:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def run_once(net_name: str, workdir, caffe, caffe_pb2, text_format):
    """The case's net made with ``caffe`` (BVLC's pycaffe or torchcaffe) in ``workdir`` (where its prior is
    found, as in a user's run), its seeded layers set, one forward and one backward: (net, outputs)."""
    import os

    text = input_net(net_name, caffe_pb2, text_format)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        save_prior(".", net_name)
        Path("net.prototxt").write_text(text)
        net = caffe.Net("net.prototxt", caffe.TRAIN)
    finally:
        os.chdir(cwd)
    for name in random_layers(text, caffe_pb2, text_format):
        for i in range(len(net.params[name])):
            blob = net.params[name][i]  # indexed: BVLC's blob vectors cannot be iterated
            blob.data[...] = weight(name, i, blob.data.shape)
    net.blobs["data"].data[...] = batch(net_name)
    out = net.forward()
    net.backward()
    return net, out


def record(arr) -> dict:
    """An array as recorded: whole (``full``) when small, else a fixed sample and its sums."""
    a = np.asarray(arr, dtype=np.float64)
    if a.size <= FULL_LIMIT:
        return {"full": a.astype(np.float32)}
    idx = sample_index(a.size)
    return {"shape": np.array(a.shape), "sample": a.ravel()[idx].astype(np.float32),
            "sum": np.array(a.sum()), "abssum": np.array(np.abs(a).sum())}


def sample_index(size: int) -> np.ndarray:
    return np.linspace(0, size - 1, SAMPLE).astype(np.int64)


# ---- `caffe test` on the demo net from an LMDB -----------------------------------------------------------
#: The demo net's TEST phase (Data layer: 64 x 64 centre crops, batch 4) over CAFFE_TEST_IMAGES images.
CAFFE_TEST_NET = "demo"
CAFFE_TEST_IMAGES = 8
CAFFE_TEST_ITERATIONS = 2
CAFFE_TEST_JSON = HERE / "caffe_test_demo.json"


def caffe_test_images() -> list:
    """uint8 C x H x W BGR images, 64 x 64 (the TEST crop): blocky colour with texture; the last gray."""
    rng = np.random.RandomState(5)
    out = []
    for i in range(CAFFE_TEST_IMAGES):
        img = np.kron(rng.uniform(0, 255, (3, 8, 8)), np.ones((8, 8))) + rng.uniform(-20, 20, (3, 64, 64))
        if i == CAFFE_TEST_IMAGES - 1:
            img = np.repeat(img.mean(axis=0, keepdims=True), 3, axis=0)
        out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return out


def write_caffe_test_dir(workdir, caffe, caffe_pb2, text_format) -> tuple:
    """In ``workdir`` (made the working directory by the caller): the LMDB the demo net's TEST Data layer
    reads, its prior, and ``weights.caffemodel`` (seeded weights, BatchNorm statistics mean 0, variance 1)
    written through ``caffe`` (BVLC's pycaffe or torchcaffe).  Returns (model path, weights path)."""
    import lmdb

    model = REPO / NETS[CAFFE_TEST_NET][0]
    param = caffe_pb2.NetParameter()
    text_format.Merge(model.read_text(), param)
    source = [lp.data_param.source for lp in param.layer
              if lp.type == "Data" and any(r.phase == caffe_pb2.TEST for r in lp.include)][0]
    workdir = Path(workdir)
    (workdir / source).parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(workdir / source), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, img in enumerate(caffe_test_images()):
            d = caffe_pb2.Datum(channels=3, height=img.shape[1], width=img.shape[2], data=img.tobytes(), label=0)
            txn.put(f"{i:08d}".encode(), d.SerializeToString())
    env.close()
    save_prior(workdir, CAFFE_TEST_NET)
    net = caffe.Net(str(model), caffe.TEST)
    seeded = set(random_layers(model.read_text(), caffe_pb2, text_format))
    types = {lp.name: lp.type for lp in param.layer}
    for name in list(net.params.keys()):
        blobs = net.params[name]
        for i in range(len(blobs)):
            if name in seeded:
                blobs[i].data[...] = weight(name, i, blobs[i].data.shape)
            elif types.get(name) == "BatchNorm":
                blobs[i].data[...] = (0.0, 1.0, 1.0)[i]
    weights = workdir / "weights.caffemodel"
    net.save(str(weights))
    return model, weights


def parse_caffe_test_log(text: str) -> dict:
    """``caffe test``'s results from its log: {"batches": [{name: loss}, ...], "mean": {name: loss}}."""
    import re

    batches, mean = [], {}
    for m in re.finditer(r"Batch (\d+), (\S+) = (\S+)", text):
        i = int(m.group(1))
        while len(batches) <= i:
            batches.append({})
        batches[i][m.group(2)] = float(m.group(3))
    for m in re.finditer(r"\] (\S+) = (\S+) \(\* ", text):
        mean[m.group(1)] = float(m.group(2))
    return {"batches": batches, "mean": mean}
