"""Helpers for the evaluation tests: a tiny labelled LMDB of photos and solid colours, a colorization net with
random weights, and a tiny Caffe classifier with hand-chosen weights plus its numpy reference.

Import as ``from eval_helpers import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""
from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
import skimage.data
from skimage.transform import resize

import torchcaffe as caffe

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "prototxt" / "demo" / "colorization_deploy.prototxt"
SIZE = 16          # stored images are SIZE x SIZE (a multiple of 8: the colorizer runs at that size)
CROP = 8           # the classifier's input: the centre 8 x 8
VGG_MEAN = np.array([103.939, 116.779, 123.68])  # B, G, R (evaluate's default)

#: The tiny classifier's classes: a linear function of the mean B, G, R of the crop (after the mean is
#: subtracted), then a softmax.  Rows: weights on (B, G, R) means; the bias makes up for the subtracted mean.
CLASSES = ["red", "green", "blue", "yellow", "dark", "cyan", "magenta", "neutral"]
CHANNEL_WEIGHTS = np.array([
    # B     G     R
    [-0.5, -0.5, 1.0],    # red:     R - (G + B) / 2
    [-0.5, 1.0, -0.5],    # green
    [1.0, -0.5, -0.5],    # blue
    [-1.0, 0.5, 0.5],     # yellow:  (R + G) / 2 - B
    [-1 / 3, -1 / 3, -1 / 3],  # dark: 128 - mean intensity (bias below)
    [0.5, 0.5, -1.0],     # cyan
    [0.5, -1.0, 0.5],     # magenta
    [0.0, 0.0, 0.0],      # neutral: a constant (bias below)
]) / 10.0
EXTRA_BIAS = np.array([0, 0, 0, 0, 128 / 30, 0, 0, 2.0])


def solid(rgb) -> np.ndarray:
    """A SIZE x SIZE RGB uint8 image of one colour with a faint deterministic texture."""
    img = np.empty((SIZE, SIZE, 3), np.float64)
    img[:] = rgb
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    img += 6 * np.sin(0.9 * xx + 0.4 * yy)[..., None]
    return np.clip(img, 0, 255).round().astype(np.uint8)


def photo(name: str) -> np.ndarray:
    p = getattr(skimage.data, name)()[..., :3]
    return (resize(p, (SIZE, SIZE), anti_aliasing=True) * 255).round().astype(np.uint8)


def dataset():
    """[(RGB uint8 image, label)]: solid colours labelled with their colour class, and photos."""
    return [(solid((230, 20, 20)), 0), (solid((20, 200, 30)), 1), (solid((25, 30, 220)), 2),
            (solid((230, 220, 20)), 3), (photo("astronaut"), 0), (photo("coffee"), 0),
            (photo("chelsea"), 3), (solid((30, 200, 210)), 5)]


def write_lmdb(path: Path, items) -> Path:
    with lmdb.open(str(path), map_size=1 << 26) as env, env.begin(write=True) as txn:
        for i, (rgb, label) in enumerate(items):
            datum = caffe.io.array_to_datum(rgb[..., ::-1].transpose(2, 0, 1).copy(), label=label)
            txn.put(f"{i:08d}_img{i}".encode(), datum.SerializeToString())
    return path


def colorizer_weights(path: Path, seed: int = 0) -> Path:
    from colorization.colorizer import random_colorization_weights

    net = caffe.Net(str(DEPLOY), caffe.TEST)
    random_colorization_weights(net, seed)
    net.save(str(path))
    return path


def classifier_files(folder: Path):
    """Write the tiny classifier (Input 3 x 8 x 8 -> InnerProduct 8 -> Softmax) with the chosen weights."""
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[1, 3, CROP, CROP]))
    n.fc8 = caffe.layers.InnerProduct(n.data, num_output=len(CLASSES))
    n.prob = caffe.layers.Softmax(n.fc8)
    proto = folder / "tiny_classifier.prototxt"
    proto.write_text(str(n.to_proto()))
    net = caffe.Net(str(proto), caffe.TEST)
    w = np.repeat(CHANNEL_WEIGHTS[:, :, None], CROP * CROP, axis=2) / (CROP * CROP)  # mean over the crop
    net.params["fc8"][0].data[...] = w.reshape(len(CLASSES), -1)
    net.params["fc8"][1].data[...] = EXTRA_BIAS
    weights = folder / "tiny_classifier.caffemodel"
    net.save(str(weights))
    return proto, weights


def reference_scores(rgb01: np.ndarray) -> np.ndarray:
    """The classifier's softmax for an RGB image in [0, 1] (H x W x 3), in numpy: BGR x 255, centre crop,
    minus the VGG mean, the linear layer, softmax."""
    bgr = rgb01[..., ::-1] * 255.0
    y0, x0 = (bgr.shape[0] - CROP) // 2, (bgr.shape[1] - CROP) // 2
    crop = bgr[y0:y0 + CROP, x0:x0 + CROP] - VGG_MEAN
    z = CHANNEL_WEIGHTS @ crop.reshape(-1, 3).mean(axis=0) + EXTRA_BIAS
    e = np.exp(z - z.max())
    return e / e.sum()


def brute_topk(scores: np.ndarray, labels, k: int) -> float:
    """Top-k accuracy in percent by sorting each row (descending; ties by index)."""
    hits = [lab in sorted(range(len(s)), key=lambda c: (-s[c], c))[:k] for s, lab in zip(scores, labels)]
    return 100.0 * float(np.mean(hits))


class Setup:
    """The files of one evaluation fixture in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.items = dataset()
        self.db = write_lmdb(folder / "db", self.items)
        self.weights = colorizer_weights(folder / "colorizer.caffemodel")
        self.cls_proto, self.cls_weights = classifier_files(folder)
        self.synsets = folder / "synset_words.txt"
        self.synsets.write_text("".join(f"n{i:08d} {name}, colour {i}\n" for i, name in enumerate(CLASSES)))

    def argv(self, out_json, *extra, classifier=True):
        a = ["--prototxt", str(DEPLOY), "--caffemodel", str(self.weights), "--lmdb", str(self.db),
             "--json", str(out_json), "--batch", "3", "--no-progress", "--classifier-resize", "0",
             "--prior", "dataset"]
        if classifier:
            a += ["--classifier-prototxt", str(self.cls_proto), "--classifier-caffemodel", str(self.cls_weights)]
        return a + [str(x) for x in extra]

    def reference(self):
        """Per variant: the numpy classifier's scores (n, K) and the ground-truth / predicted ab per image, from
        scikit-image's Lab conversion and the colorizer's ab at the image's size."""
        import torch
        from skimage.color import lab2rgb, rgb2lab

        from colorization.colorizer import Colorizer

        col = Colorizer(DEPLOY, self.weights)
        out = {"model": [], "gray": [], "ground_truth": [], "ab_gt": [], "ab_model": []}
        for rgb, _ in self.items:
            lab = rgb2lab(rgb)
            L = lab[..., :1]
            with torch.no_grad():
                ab = col.predict_ab_full(torch.from_numpy(L.transpose(2, 0, 1)[None].astype(np.float32)))
            ab = ab[0].numpy().transpose(1, 2, 0).astype(np.float64)
            out["ground_truth"].append(reference_scores(rgb / 255.0))
            out["gray"].append(reference_scores(lab2rgb(np.concatenate([L, 0 * L, 0 * L], axis=2))))
            out["model"].append(reference_scores(lab2rgb(np.concatenate([L, ab], axis=2))))
            out["ab_gt"].append(lab[..., 1:])
            out["ab_model"].append(ab)
        return {k: np.array(v) for k, v in out.items()}
