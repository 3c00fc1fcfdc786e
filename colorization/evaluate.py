"""The paper's Table 1 protocol in one command: AuC of the ab prediction and classification by a Caffe
classifier (e.g. VGG16) of the recolorized, grayscale and ground-truth images, all from one pass.

    evaluate --prototxt P --caffemodel W (--lmdb DIR | --images DIR) [--labels FILE] --json OUT.json
        [--prior F] [--classifier-prototxt C --classifier-caffemodel CW --classifier-mean 103.939,116.779,123.68]
        [--cache DIR] [--csv OUT.csv] [--html DIR] [--limit N] [--batch B] [--gpu G]

What is scored, per image (an LMDB of Datums as ``tools/build_lmdb.py`` writes them, e.g. ``--split vgg``, the
last 48,000 validation images, or ``--split test``; or a folder of images, each resized to ``--resize`` 256 x
256 as ``convert_imageset`` does):

* three colourings of the image: ``model`` (the image's own L with the net's ab, upsampled bilinearly to the
  image's size), ``gray`` (L with a = b = 0, the paper's grayscale baseline) and ``ground_truth`` (the image);
* AuC (``cic.metrics``): the fraction of pixels within an ab distance t of the ground truth, t = 0..150,
  averaged over t, raw and class-rebalanced (weights 1 / prior of the ground-truth bin; ``--prior`` a
  ``prior_probs.npy``, by default the toolkit's ``data/prior_probs.npy`` when present; ``--prior dataset`` or
  no such file: the ground-truth bin distribution of the scored images).  Dataset values pool all pixels; the
  ground truth scores 100 % by construction;
* with a classifier: its scores for each colouring, preprocessed as Caffe's VGG evaluation did: RGB in [0, 1]
  -> BGR x 255, resized to ``--classifier-resize`` (256) when the image has another size, centre crop of the
  classifier's input size (224), minus the mean (``--classifier-mean``: three BGR values, or a
  ``.binaryproto`` / ``.npy`` mean image, centre-cropped).  Top-1 and top-5 accuracy against the labels (top-k:
  the label is among the first k of the scores sorted descending, ties in index order).

Resumable: results are cached per chunk of images in ``--cache`` (default ``OUT.cache/`` beside the JSON), each
chunk an ``.npz`` written atomically and keyed by the images' keys; a rerun skips the chunks already done
(an interrupted run loses at most the chunk in progress), and a cache made with other settings is refused.
Outputs: the JSON (``model``, ``gray``, ``ground_truth``, each with ``auc_raw`` and ``auc_rebalanced`` in
percent and, with a classifier, ``top1`` and ``top5``; the paper's Table 1 beside them), a per-image CSV, and
with ``--html DIR`` an offline report ``DIR/report.html``.  ``colorization.vgg_analysis`` reads the cache.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import cic

VARIANTS = ("model", "gray", "ground_truth")
VARIANT_TITLES = {"model": "Ours (recolorized)", "gray": "Grayscale (ab = 0)", "ground_truth": "Ground truth"}
TOPK = 5
#: The paper's Table 1 (ImageNet) as the project's paper_facts record it (None: not recorded there).
PAPER_TABLE1 = {"model": {"auc_raw": 89.5, "auc_rebalanced": 67.3, "top1": 56.0},
                "gray": {"auc_raw": None, "auc_rebalanced": None, "top1": 52.7},
                "ground_truth": {"auc_raw": 100.0, "auc_rebalanced": 100.0, "top1": 68.3}}
CACHE_VERSION = 1


class EvaluationError(Exception):
    """A user error: reported as one line, never a traceback."""


# ---------------------------------------------------------------------------------------------------------
# Datasets: keys, and (BGR uint8 H x W x 3, label) per key
# ---------------------------------------------------------------------------------------------------------

class LmdbDataset:
    """An LMDB of Caffe Datums (raw or encoded, BGR), read in key order."""

    def __init__(self, path):
        import lmdb

        self.path = str(path)
        if not os.path.isdir(self.path) or not os.path.exists(os.path.join(self.path, "data.mdb")):
            raise EvaluationError(f"{self.path}: not an LMDB directory (no data.mdb)")
        self.env = lmdb.open(self.path, readonly=True, lock=False, readahead=False)
        with self.env.begin() as txn:
            self.keys = [k.decode("utf-8", "replace") for k in txn.cursor().iternext(keys=True, values=False)]
        self.description = f"LMDB {self.path}"

    def read(self, key: str):
        import torchcaffe as caffe

        with self.env.begin() as txn:
            raw = txn.get(key.encode())
        if raw is None:
            raise EvaluationError(f"{self.path}: no record {key!r}")
        datum = caffe.proto.caffe_pb2.Datum()
        try:
            datum.ParseFromString(raw)
            chw = caffe.io.datum_to_array(datum)
        except Exception as e:  # noqa: BLE001 - a corrupt record is a data error
            raise EvaluationError(f"{self.path}: record {key!r} is not a readable Datum ({e})") from None
        if chw.shape[0] == 1:
            chw = np.repeat(chw, 3, axis=0)
        if chw.shape[0] != 3:
            raise EvaluationError(f"{self.path}: record {key!r} has {chw.shape[0]} channels, expected 3")
        return np.ascontiguousarray(chw.transpose(1, 2, 0).astype(np.uint8)), int(datum.label)

    def fingerprint(self) -> dict:
        return {"lmdb": os.path.abspath(self.path), "count": len(self.keys),
                "keys_sha1": _sha1_lines(self.keys)}


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class ImageFolder:
    """Every image file under a folder (sorted relative paths), resized to ``resize`` x ``resize`` with
    OpenCV's INTER_LINEAR as ``convert_imageset --resize_height --resize_width`` (0 keeps the size).

    Labels: ``labels`` (a file of ``relative/path label`` lines, Caffe's ``val.txt``; a bare file name also
    matches), else the sorted index of the top-level sub-folder, else -1 (unknown)."""

    def __init__(self, root, labels=None, resize: int = 256):
        self.root = Path(root)
        if not self.root.is_dir():
            raise EvaluationError(f"{root}: no such image folder")
        self.resize = int(resize)
        files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(self.root).parts))
        if not files:
            raise EvaluationError(f"{root}: no image files")
        self.keys = files
        self.labels = {}
        if labels:
            table = read_labels_file(labels)
            for k in files:
                lab = table.get(k, table.get(Path(k).name))
                self.labels[k] = -1 if lab is None else lab
        else:
            folders = sorted({k.split("/")[0] for k in files if "/" in k})
            index = {f: i for i, f in enumerate(folders)}
            self.labels = {k: index.get(k.split("/")[0], -1) if "/" in k else -1 for k in files}
        self.description = f"images {self.root}"

    def read(self, key: str):
        import cv2

        path = self.root / key
        data = np.fromfile(str(path), dtype=np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if bgr is None:
            raise EvaluationError(f"{path}: not an image that OpenCV can decode")
        if self.resize and bgr.shape[:2] != (self.resize, self.resize):
            bgr = cv2.resize(bgr, (self.resize, self.resize), interpolation=cv2.INTER_LINEAR)
        return bgr, self.labels[key]

    def fingerprint(self) -> dict:
        return {"images": str(self.root.resolve()), "count": len(self.keys), "resize": self.resize,
                "keys_sha1": _sha1_lines(self.keys),
                "labels_sha1": _sha1_lines(f"{k} {self.labels[k]}" for k in self.keys)}


def read_labels_file(path) -> dict:
    """``name label`` per line (the label after the last space) -> {name: label}."""
    table = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise EvaluationError(f"{path}: cannot read the labels file ({e.strerror})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        name, _, lab = line.strip().rpartition(" ")
        try:
            table[name.strip()] = int(lab)
        except ValueError:
            raise EvaluationError(f"{path}:{n}: expected 'name label', got {line.strip()!r}") from None
    return table


def open_dataset(lmdb=None, images=None, labels=None, resize=256):
    if bool(lmdb) == bool(images):
        raise EvaluationError("give one of --lmdb DIR and --images DIR")
    if lmdb:
        if labels:
            raise EvaluationError("--labels applies to --images (an LMDB's Datums carry their labels)")
        return LmdbDataset(lmdb)
    return ImageFolder(images, labels, resize)


def read_synsets(path) -> list:
    """ILSVRC's ``synset_words.txt`` (``n01440764 tench, Tinca tinca``) or ``synsets.txt`` (one wnid a line):
    the category names in label order."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise EvaluationError(f"{path}: cannot read the synset list ({e.strerror})") from None
    return lines


# ---------------------------------------------------------------------------------------------------------
# The classifier, with Caffe's VGG preprocessing
# ---------------------------------------------------------------------------------------------------------

def parse_mean(spec, channels: int = 3):
    """``--classifier-mean``: ``B,G,R`` values (returned as a (3,) array), or a ``.binaryproto`` / ``.npy`` mean
    image (C x H x W)."""
    if spec is None or str(spec).strip() == "":
        return None
    spec = str(spec)
    if os.path.exists(spec):
        try:
            if spec.endswith(".npy"):
                arr = np.load(spec).astype(np.float32)
            else:
                import torchcaffe as caffe

                blob = caffe.proto.caffe_pb2.BlobProto()
                with open(spec, "rb") as f:
                    blob.ParseFromString(f.read())
                arr = caffe.io.blobproto_to_array(blob).astype(np.float32)
        except Exception as e:  # noqa: BLE001
            raise EvaluationError(f"{spec}: not a readable mean file ({e})") from None
        arr = arr.reshape(arr.shape[-3:]) if arr.ndim >= 3 else arr
        if arr.ndim == 1 and arr.shape[0] == channels:
            return arr
        if arr.ndim != 3 or arr.shape[0] != channels:
            raise EvaluationError(f"{spec}: mean has shape {arr.shape}, expected {channels} x H x W or ({channels},)")
        return arr
    try:
        vals = np.array([float(v) for v in spec.split(",")], dtype=np.float32)
    except ValueError:
        raise EvaluationError(f"--classifier-mean: {spec!r} is neither a file nor comma-separated numbers") from None
    if vals.shape[0] != channels:
        raise EvaluationError(f"--classifier-mean: expected {channels} values (B,G,R), got {vals.shape[0]}")
    return vals


def centre_crop(x: torch.Tensor, hw) -> torch.Tensor:
    """The centre ``hw`` window of ``(..., H, W)`` (Caffe's TEST-phase crop: offsets (H - h) // 2)."""
    h, w = hw
    H, W = x.shape[-2:]
    if H < h or W < w:
        raise EvaluationError(f"image of {H}x{W} is smaller than the classifier's input {h}x{w}; "
                              f"set --classifier-resize")
    y0, x0 = (H - h) // 2, (W - w) // 2
    return x[..., y0:y0 + h, x0:x0 + w]


class Classifier:
    """A Caffe classification net (its first input blob, its last output) fed as Caffe's VGG evaluation was:
    BGR in [0, 255], resized to ``resize`` x ``resize`` (when the image has another size), centre crop of the
    input size, minus ``mean`` (per channel, or a mean image centre-cropped)."""

    def __init__(self, prototxt, weights, mean=None, resize: int = 256, device="cpu"):
        import torchcaffe as caffe

        for f in (prototxt, weights):
            if not os.path.isfile(f):
                raise EvaluationError(f"{f}: no such file")
        self.net = caffe.Net(str(prototxt), caffe.TEST, device=device)
        self.net.copy_from(str(weights))
        if not self.net.inputs:
            raise EvaluationError(f"{prototxt}: the classifier has no input blob")
        self.input = self.net.inputs[0]
        self.output = self.net.outputs[-1]
        shape = self.net.blobs[self.input].shape
        if len(shape) != 4 or shape[1] != 3:
            raise EvaluationError(f"{prototxt}: input blob {self.input!r} has shape {shape}, expected N x 3 x H x W")
        self.input_hw = tuple(shape[-2:])
        self.resize = int(resize)
        self.mean = mean
        self.device = device
        out = self.net.blobs[self.output].shape
        self.num_classes = int(np.prod(out[1:]))

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB ``(N, 3, H, W)`` in [0, 1] -> the classifier's input ``(N, 3, h, w)``."""
        x = rgb.float().flip(-3) * 255.0
        if self.resize and tuple(x.shape[-2:]) != (self.resize, self.resize):
            x = torch.nn.functional.interpolate(x, size=(self.resize, self.resize), mode="bilinear",
                                                align_corners=False, antialias=True)
        x = centre_crop(x, self.input_hw)
        if self.mean is not None:
            m = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
            if m.dim() == 1:
                m = m[:, None, None]
            else:
                m = centre_crop(m, self.input_hw)
            x = x - m
        return x

    def scores(self, rgb: torch.Tensor) -> np.ndarray:
        """The output ``(N, K)`` for a batch of RGB images ``(N, 3, H, W)`` in [0, 1]."""
        x = self.preprocess(rgb.to(self.device))
        blob = self.net.blobs[self.input]
        blob.reshape(*x.shape)
        self.net.reshape()
        blob.data_t = x
        self.net.forward_loss()
        out = self.net.blobs[self.output].data_t
        return out.reshape(out.shape[0], -1).double().cpu().numpy()


def topk_stats(scores: np.ndarray, labels: np.ndarray, k: int = TOPK):
    """Per image: the first ``k`` classes by descending score (stable: ties in index order), their scores, the
    label's position in that order (-1 for an unknown label) and the label's score."""
    order = np.argsort(-scores, axis=1, kind="stable")
    top = order[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    rank = np.full(len(labels), -1, dtype=np.int32)
    lscore = np.full(len(labels), np.nan, dtype=np.float32)
    for i, lab in enumerate(labels):
        if 0 <= lab < scores.shape[1]:
            rank[i] = int(np.nonzero(order[i] == lab)[0][0])
            lscore[i] = scores[i, lab]
    return top.astype(np.int32), top_scores.astype(np.float32), rank, lscore


# ---------------------------------------------------------------------------------------------------------
# The colourings of a batch
# ---------------------------------------------------------------------------------------------------------

def predict_ab(colorizer, L: torch.Tensor) -> torch.Tensor:
    """The colorizer's ab ``(N, 2, H, W)`` for L ``(N, 1, H, W)``: the fully convolutional net runs at the
    image's size (at the next multiple of 8 when the size is not one), its output upsampled bilinearly."""
    H, W = L.shape[-2:]
    if H % 8 == 0 and W % 8 == 0:
        return colorizer.predict_ab_full(L)
    h8, w8 = -(-H // 8) * 8, -(-W // 8) * 8
    ab = colorizer.predict_ab_full(cic.upsample_bilinear(L, (h8, w8)))
    return cic.upsample_bilinear(ab, (H, W))


def colourings(colorizer, bgr: torch.Tensor):
    """Lab of the three colourings of a batch of BGR uint8 images ``(N, 3, H, W)``: {variant: Lab}, plus the
    ground truth's RGB in [0, 1] (the image itself, not a Lab round trip)."""
    lab = cic.bgr255_to_lab(bgr.float())
    L = lab[:, :1]
    with torch.no_grad():
        ab = predict_ab(colorizer, L)
    return {"model": torch.cat([L, ab.to(L)], dim=1),
            "gray": torch.cat([L, torch.zeros_like(lab[:, 1:])], dim=1),
            "ground_truth": lab}, bgr.float().flip(1) / 255.0


def lab_to_rgb8(lab: torch.Tensor) -> np.ndarray:
    """One Lab image ``(3, H, W)`` -> RGB uint8 H x W x 3."""
    rgb = cic.lab_to_rgb(lab[None].float())[0].permute(1, 2, 0).cpu().numpy()
    return (255 * np.clip(rgb, 0, 1) + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# The cache: one .npz per chunk of images
# ---------------------------------------------------------------------------------------------------------

def _sha1_lines(lines) -> str:
    h = hashlib.sha1()
    for s in lines:
        h.update(s.encode("utf-8", "replace") + b"\n")
    return h.hexdigest()


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class ResultCache:
    """``DIR/config.json`` (what the results depend on) and ``DIR/chunk_%06d.npz`` (images
    ``[i * chunk, (i + 1) * chunk)`` of the dataset's key order)."""

    def __init__(self, folder, config: dict, keys: list):
        self.folder = None if folder is None else Path(folder)
        self.config = config
        self.keys = keys
        self.chunk = int(config["chunk"])

    def open(self) -> None:
        if self.folder is None:
            return
        cfg_path = self.folder / "config.json"
        if cfg_path.exists():
            try:
                old = json.loads(cfg_path.read_text())
            except ValueError:
                raise EvaluationError(f"{cfg_path}: not a JSON file; remove it or choose another --cache") from None
            diff = [k for k in sorted(set(old) | set(self.config))
                    if k != "chunk" and old.get(k) != self.config.get(k)]
            if diff:
                raise EvaluationError(f"{self.folder}: this cache holds results made with other settings "
                                      f"({', '.join(diff)} differ); use another --cache or remove it")
            self.chunk = int(old.get("chunk", self.chunk))  # the cache's own chunking
            self.config["chunk"] = self.chunk
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cfg_path, json.dumps(self.config, indent=1, sort_keys=True) + "\n")

    def n_chunks(self, count: int) -> int:
        return -(-count // self.chunk)

    def path(self, i: int) -> Path:
        return self.folder / f"chunk_{i:06d}.npz"

    def chunk_keys(self, i: int, count: int) -> list:
        return self.keys[i * self.chunk:min((i + 1) * self.chunk, count)]

    def load(self, i: int, count: int):
        """The chunk's arrays, or None when it is missing, unreadable or holds other images."""
        p = self.path(i)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except Exception:  # noqa: BLE001 - a damaged chunk is recomputed
            return None
        if list(d.get("keys", [])) != self.chunk_keys(i, count):
            return None
        return d

    def save(self, i: int, arrays: dict) -> None:
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.path(i), buf.getvalue())


def evaluate_chunk(keys, dataset, colorizer, classifier, prior, batch: int, bar=None) -> dict:
    """The per-image results of ``keys`` and the chunk's pooled AuC counts, as the cache stores them."""
    n = len(keys)
    labels = np.zeros(n, dtype=np.int64)
    auc_raw = np.zeros((n, len(VARIANTS)))
    auc_reb = np.zeros((n, len(VARIANTS)))
    meters = {v: cic.AucMeter() for v in VARIANTS}
    cls = {}
    i = 0
    while i < n:
        imgs, j = [], i
        while j < n and len(imgs) < batch:
            img, labels[j] = dataset.read(keys[j])
            if imgs and img.shape != imgs[0].shape:
                break
            imgs.append(img)
            j += 1
        bgr = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).to(colorizer.net.device)
        labs, gt_rgb = colourings(colorizer, bgr)
        gt_ab = labs["ground_truth"][:, 1:]
        for v, lab in enumerate(labs.values()):
            name = VARIANTS[v]
            meters[name].update(lab[:, 1:], gt_ab)
            auc_raw[i:j, v] = meters[name].per_image_auc[i:j].numpy()
            if prior is None:
                auc_reb[i:j, v] = meters[name].per_image_rebalanced_auc[i:j].numpy()
            else:
                auc_reb[i:j, v] = cic.rebalanced_auc(lab[:, 1:], gt_ab, prior=prior).cpu().numpy()
            if classifier is not None:
                rgb = gt_rgb if name == "ground_truth" else cic.lab_to_rgb(lab)
                with torch.no_grad():
                    s = classifier.scores(rgb)
                for arr, val in zip(("top5", "top5_score", "label_rank", "label_score"),
                                    topk_stats(s, labels[i:j])):
                    cls.setdefault(arr, [[] for _ in VARIANTS])[v].append(val)
        if bar is not None:
            bar.update(j - i)
        i = j
    out = {"keys": np.array(keys), "labels": labels, "auc_raw": auc_raw, "auc_rebalanced": auc_reb,
           "hits": np.stack([meters[v].hits.cpu().numpy() for v in VARIANTS]),
           "totals": np.stack([meters[v].totals.cpu().numpy() for v in VARIANTS])}
    for arr, per_variant in cls.items():
        out[arr] = np.stack([np.concatenate(p) for p in per_variant], axis=1)  # (n, 3, ...)
    return out


def load_cache(folder) -> "Results":
    """The results stored in an evaluate cache (every chunk file, in order), without recomputing anything."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        run_info = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        raise EvaluationError(f"{folder}: not an evaluate cache (config.json, run.json)") from None
    chunks = []
    for p in sorted(folder.glob("chunk_*.npz")):
        with np.load(p, allow_pickle=False) as z:
            chunks.append({k: z[k] for k in z.files})
    if not chunks:
        raise EvaluationError(f"{folder}: no results yet")
    return Results(chunks, dict(config, **run_info))


@contextlib.contextmanager
def quiet_runtime():
    """The runtime's INFO lines (net construction) off while the progress bar runs; the level restored after."""
    from torchcaffe import glog

    level = glog.get_level()
    glog.set_level(max(level, glog.WARNING))
    try:
        yield
    finally:
        glog.set_level(level)


RUN_OPTIONS = ("prototxt", "caffemodel", "lmdb", "images", "labels", "resize", "prior", "classifier_prototxt",
               "classifier_caffemodel", "classifier_mean", "classifier_resize")


def open_results(folder, gpu: int = -1) -> "Results":
    """The results of a finished cache with what the report needs (dataset, colorizer, prior), from the options
    of the run that made it (``run.json``); the files' digests are checked and missing chunks computed."""
    run_json = Path(folder) / "run.json"
    if not run_json.exists():
        raise EvaluationError(f"{folder}: not an evaluate cache (no run.json)")
    saved = json.loads(run_json.read_text())
    args = argparse.Namespace(limit=0, batch=8, gpu=gpu, chunk=250, no_progress=True)
    for key in RUN_OPTIONS:
        setattr(args, key, saved.get(key))
    with quiet_runtime():
        return run(args, folder)


class Results:
    """Everything the cache holds for the evaluated images, concatenated in key order.

    ``keys`` (n,), ``labels`` (n,), ``auc_raw`` / ``auc_rebalanced`` (n, 3) fractions, ``hits`` (3, Q, T) and
    ``totals`` (3, Q) pooled counts; with a classifier ``top5`` (n, 3, 5), ``top5_score`` (n, 3, 5),
    ``label_rank`` (n, 3), ``label_score`` (n, 3).  The variant axis follows :data:`VARIANTS`."""

    def __init__(self, chunks: list, config: dict):
        self.config = config
        first = chunks[0]
        for name in first:
            if name in ("hits", "totals"):
                setattr(self, name, sum(c[name].astype(np.int64) for c in chunks))
            else:
                setattr(self, name, np.concatenate([c[name] for c in chunks]))
        self.keys = [str(k) for k in self.keys]
        self.has_classifier = "top5" in first

    def __len__(self):
        return len(self.keys)

    def variant(self, name: str) -> int:
        return VARIANTS.index(name)

    def meter(self, name: str):
        """A :class:`cic.AucMeter` holding the pooled counts of one variant."""
        m = cic.AucMeter()
        v = self.variant(name)
        m.hits, m.totals = torch.from_numpy(self.hits[v]), torch.from_numpy(self.totals[v])
        return m

    def topk_accuracy(self, name: str, k: int) -> float:
        """Top-k accuracy (a fraction) over the images with a known label."""
        rank = self.label_rank[:, self.variant(name)]
        known = rank >= 0
        return float(np.mean(rank[known] < k)) if known.any() else float("nan")


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------

def add_arguments(ap: argparse.ArgumentParser, outputs: bool = True) -> None:
    """The data, model, classifier and cache options (shared with ``vgg_analysis``)."""
    from colorization.colorizer import DEFAULT_PROTOTXT

    g = ap.add_argument_group("colorization model and data")
    g.add_argument("-prototxt", "--prototxt", default=str(DEFAULT_PROTOTXT), help="deploy net (default: %(default)s)")
    g.add_argument("-caffemodel", "--caffemodel", help="its weights")
    g.add_argument("-lmdb", "--lmdb", help="LMDB of Datums (tools/build_lmdb.py; BGR, raw or encoded)")
    g.add_argument("--images", help="a folder of images (instead of --lmdb)")
    g.add_argument("--labels", help="for --images: 'relative/path label' lines (Caffe's val.txt)")
    g.add_argument("--resize", type=int, default=256,
                   help="for --images: resize to N x N as convert_imageset does (0: keep; default 256)")
    g.add_argument("-prior", "--prior", help="prior_probs.npy for the rebalanced AuC (default: the toolkit's "
                   "data/prior_probs.npy when present, else 'dataset': the ground-truth bin distribution of the "
                   "scored images; relative names not found here resolve in data/)")
    g.add_argument("-limit", "--limit", type=int, default=0, help="only the first N images")
    g.add_argument("-batch", "--batch", type=int, default=8, help="images per forward pass (default 8)")
    g.add_argument("-gpu", "--gpu", type=int, default=-1, help="CUDA device (default: the CPU)")
    c = ap.add_argument_group("classifier (Caffe files, e.g. VGG_ILSVRC_16_layers_deploy.prototxt)")
    c.add_argument("--classifier-prototxt")
    c.add_argument("--classifier-caffemodel")
    c.add_argument("--classifier-mean", default="103.939,116.779,123.68",
                   help="B,G,R values or a .binaryproto/.npy mean image (default: VGG16's %(default)s)")
    c.add_argument("--classifier-resize", type=int, default=256,
                   help="resize images of another size to N x N before the centre crop (0: never; default 256)")
    ap.add_argument("--cache", help="per-image results (default: OUT.cache beside --json)")
    ap.add_argument("--chunk", type=int, default=250,
                    help="images per cache file for a new cache (default 250; an existing cache keeps its own)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--exact", action="store_true",
                    help="run the colorization net in Caffe's exact float32 (default: the fast inference path, "
                         "mean |delta ab| <= 1 against exact; see torchcaffe.fast)")


def load_prior_arg(spec):
    if spec == "dataset":
        return None, "ground-truth bin distribution of the scored images"
    if not spec:
        released = cic.resolve_data_path(cic.PRIOR_PROBS)
        if not released.is_file():
            return None, "ground-truth bin distribution of the scored images"
        spec = str(released)
    path = Path(spec) if Path(spec).exists() else cic.resolve_data_path(spec)
    try:
        return cic.load_prior(path), str(path)
    except (OSError, ValueError) as e:
        raise EvaluationError(f"--prior: {e}") from None


def run(args, cache_dir) -> Results:
    """Score the dataset (resuming from ``cache_dir``; None: no cache) and return the results of its first ``limit`` images."""
    from colorization.colorizer import Colorizer, torch_device

    if not args.caffemodel:
        raise EvaluationError("--caffemodel is required (the colorization net's weights)")
    for f in (args.prototxt, args.caffemodel):
        if not os.path.isfile(f):
            raise EvaluationError(f"{f}: no such file")
    if bool(args.classifier_prototxt) != bool(args.classifier_caffemodel):
        raise EvaluationError("give both --classifier-prototxt and --classifier-caffemodel, or neither")
    try:
        device = torch_device(args.gpu)
    except ValueError as e:
        raise EvaluationError(str(e)) from None
    dataset = open_dataset(args.lmdb, args.images, args.labels, args.resize)
    count = min(len(dataset.keys), args.limit) if args.limit else len(dataset.keys)
    if count == 0:
        raise EvaluationError(f"{dataset.description}: no images")
    prior, prior_name = load_prior_arg(args.prior)
    try:
        colorizer = Colorizer(args.prototxt, args.caffemodel, device=device,
                              fast=not getattr(args, "exact", False))
    except (OSError, ValueError) as e:
        raise EvaluationError(f"{args.caffemodel}: {e}") from None
    classifier = None
    config = {"version": CACHE_VERSION, "chunk": args.chunk, "dataset": dataset.fingerprint(),
              "prototxt": file_digest(args.prototxt), "caffemodel": file_digest(args.caffemodel),
              "prior": None if prior is None else hashlib.sha256(prior.tobytes()).hexdigest(), "classifier": None,
              "exact": bool(getattr(args, "exact", False))}
    if args.classifier_prototxt:
        mean = parse_mean(args.classifier_mean)
        classifier = Classifier(args.classifier_prototxt, args.classifier_caffemodel, mean,
                                args.classifier_resize, device)
        config["classifier"] = {"prototxt": file_digest(args.classifier_prototxt),
                                "caffemodel": file_digest(args.classifier_caffemodel),
                                "mean": None if mean is None else np.asarray(mean).round(6).tolist()
                                if mean.ndim == 1 else hashlib.sha256(mean.tobytes()).hexdigest(),
                                "resize": args.classifier_resize}
    cache = ResultCache(cache_dir, config, dataset.keys)
    cache.open()
    def absolute(p):
        return os.path.abspath(p) if p else p

    info = {"source": dataset.description, "prototxt": absolute(args.prototxt), "caffemodel": absolute(args.caffemodel),
            "prior_name": prior_name, "lmdb": absolute(args.lmdb), "images": absolute(args.images),
            "labels": absolute(args.labels), "resize": args.resize,
            "classifier_prototxt": absolute(args.classifier_prototxt),
            "classifier_caffemodel": absolute(args.classifier_caffemodel),
            "classifier_mean": absolute(args.classifier_mean) if args.classifier_mean and
            os.path.exists(args.classifier_mean) else args.classifier_mean,
            "classifier_resize": args.classifier_resize, "prior": absolute(args.prior) if args.prior and
            os.path.exists(args.prior) else args.prior}
    if cache_dir is not None:
        atomic_write_text(Path(cache_dir) / "run.json", json.dumps(info, indent=1) + "\n")
    chunks, todo = [], []
    for i in range(cache.n_chunks(count)):
        d = cache.load(i, count) if cache.folder is not None else None
        chunks.append(d)
        if d is None:
            todo.append(i)
    done = count - sum(len(cache.chunk_keys(i, count)) for i in todo)
    from tqdm import tqdm

    with tqdm(total=count, initial=done, unit="img", disable=args.no_progress, file=sys.stderr) as bar:
        for i in todo:
            keys = cache.chunk_keys(i, count)
            d = evaluate_chunk(keys, dataset, colorizer, classifier, prior, max(1, args.batch), bar)
            # only whole chunks are cached (a --limit may cut the last one short)
            if cache.folder is not None and (len(keys) == cache.chunk or count == len(dataset.keys)):
                cache.save(i, d)
            chunks[i] = d
    res = Results(chunks, dict(config, **info))
    res.dataset, res.colorizer, res.prior = dataset, colorizer, prior
    res.num_classes = classifier.num_classes if classifier is not None else None
    return res


def summarize(res: Results) -> dict:
    """The JSON summary: per variant AuC (raw, rebalanced) and top-1/top-5, in percent."""
    out = {"count": len(res), "source": res.config["source"], "prior": res.config["prior_name"]}
    for name in VARIANTS:
        m = res.meter(name)
        row = {"auc_raw": 100 * m.auc(), "auc_rebalanced": 100 * m.rebalanced_auc(res.prior)}
        if res.has_classifier:
            row["top1"] = 100 * res.topk_accuracy(name, 1)
            row["top5"] = 100 * res.topk_accuracy(name, 5)
        out[name] = row
    if res.has_classifier:
        out["labelled"] = int(np.sum(res.label_rank[:, 0] >= 0))
    out["paper_table1"] = PAPER_TABLE1
    return out


def write_csv(res: Results, path) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    head = ["key", "label"]
    for name in VARIANTS:
        head += [f"{name}_auc_raw", f"{name}_auc_rebalanced"]
        if res.has_classifier:
            head += [f"{name}_top1_class", f"{name}_label_rank", f"{name}_top1_correct", f"{name}_top5_correct"]
    w.writerow(head)
    for i, key in enumerate(res.keys):
        row = [key, int(res.labels[i])]
        for v, name in enumerate(VARIANTS):
            row += [f"{100 * res.auc_raw[i, v]:.4f}", f"{100 * res.auc_rebalanced[i, v]:.4f}"]
            if res.has_classifier:
                r = int(res.label_rank[i, v])
                row += [int(res.top5[i, v, 0]), r, int(r == 0) if r >= 0 else "", int(0 <= r < 5) if r >= 0 else ""]
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def print_table(summary: dict, file=sys.stdout) -> None:
    has_cls = "top1" in summary["model"]
    print(f"{summary['count']} images of {summary['source']}", file=file)
    head = f"{'':>20}  {'AuC raw':>8}  {'AuC rebal':>9}" + (f"  {'top-1':>6}  {'top-5':>6}" if has_cls else "")
    print(head, file=file)
    for name in VARIANTS:
        r = summary[name]
        line = f"{VARIANT_TITLES[name]:>20}  {r['auc_raw']:7.2f}%  {r['auc_rebalanced']:8.2f}%"
        if has_cls:
            line += f"  {r['top1']:5.2f}%  {r['top5']:5.2f}%"
        print(line, file=file)


def example_images(res: Results, indices) -> list:
    """(key, gray, recolorized, ground truth) RGB uint8 images of the given result rows (recomputed)."""
    out = []
    for i in indices:
        key = res.keys[i]
        bgr, _ = res.dataset.read(key)
        labs, _ = colourings(res.colorizer, torch.from_numpy(bgr).permute(2, 0, 1)[None].to(res.colorizer.net.device))
        out.append((key, lab_to_rgb8(labs["gray"][0]), lab_to_rgb8(labs["model"][0]), bgr[..., ::-1].copy()))
    return out


def category_name(names, c: int) -> str:
    if names and 0 <= c < len(names):
        return names[c]
    return str(c)


def write_html(res: Results, summary: dict, folder, synsets=None, examples: int = 8,
               before=(), after=(), title="Colorization evaluation (paper Table 1 protocol)") -> Path:
    """``folder/report.html``: the Table 1 rows beside the paper's, the AuC curves, example images.  ``before``
    and ``after``: functions that add sections to the :class:`colorization.report.Report` first and last."""
    from colorization import report

    rep = report.Report(title)
    for section in before:
        section(rep)
    rep.paragraph(f"{summary['count']} images of {summary['source']}; colorization net {res.config['prototxt']} "
                  f"with weights {res.config['caffemodel']}; rebalanced AuC prior: {summary['prior']}.")
    has_cls = res.has_classifier
    add_table1(rep, summary, has_cls)
    rep.image(auc_curve_png(res), "Cumulative ab-error curves (fraction of pixels within t); AuC is their mean.")
    names = read_synsets(synsets) if synsets else None
    rows = example_images(res, range(min(examples, len(res))))
    items = []
    for (key, gray, col, gt), i in zip(rows, range(len(rows))):
        cap = f"{key}: AuC {100 * res.auc_raw[i, 0]:.1f} % (gray {100 * res.auc_raw[i, 1]:.1f} %)"
        if has_cls:
            cap += "; top-1: " + ", ".join(f"{n} {category_name(names, int(res.top5[i, v, 0]))}"
                                           for v, n in enumerate(("recolorized", "gray", "truth")))
        items.append((np.concatenate([gray, col, gt], axis=1), cap))
    rep.heading("Examples: grayscale input | recolorized | ground truth")
    small = items and items[0][0].shape[1] < 384
    rep.gallery(items, width=384 if small else None)  # small crops shown enlarged
    for section in after:
        section(rep)
    return rep.write(Path(folder) / "report.html")


def add_table1(rep, summary: dict, has_cls: bool) -> None:
    head = ["", "AuC raw (%)", "AuC rebalanced (%)"] + (["VGG top-1 (%)", "VGG top-5 (%)"] if has_cls else [])
    head += ["paper: AuC raw", "AuC rebal.", "VGG top-1"]
    rows = []
    for name in VARIANTS:
        r, p = summary[name], PAPER_TABLE1[name]
        row = [VARIANT_TITLES[name], f"{r['auc_raw']:.2f}", f"{r['auc_rebalanced']:.2f}"]
        if has_cls:
            row += [f"{r['top1']:.2f}", f"{r['top5']:.2f}"]
        row += ["-" if p[k] is None else f"{p[k]:.1f}" for k in ("auc_raw", "auc_rebalanced", "top1")]
        rows.append(row)
    rep.heading("Table 1 protocol")
    rep.table(head, rows)
    if not has_cls:
        rep.paragraph("The classification columns (VGG16 top-1 and top-5 on recolorized, grayscale and "
                      "ground-truth images) need a classifier: run with --classifier-prototxt and "
                      "--classifier-caffemodel, e.g. the public VGG_ILSVRC_16_layers Caffe files.")


def auc_curve_png(res: Results) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for name in VARIANTS:
        m = res.meter(name)
        axes[0].plot(m.curve().numpy(), label=f"{VARIANT_TITLES[name]} ({100 * m.auc():.1f} %)")
        axes[1].plot(m.rebalanced_curve(res.prior).numpy(),
                     label=f"{VARIANT_TITLES[name]} ({100 * m.rebalanced_auc(res.prior):.1f} %)")
    for ax, title in zip(axes, ("raw", "class-rebalanced")):
        ax.set_xlabel("ab threshold t")
        ax.set_ylabel("fraction of pixels within t")
        ax.set_title(f"AuC, {title}")
        ax.set_ylim(0, 1.01)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def default_cache(json_out) -> Path:
    """``OUT.json`` -> ``OUT.cache``."""
    p = Path(json_out)
    return p.with_name((p.name[:-5] if p.name.endswith(".json") else p.name) + ".cache")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--json", help="the summary (JSON); without it (and --cache) nothing is cached or written")
    ap.add_argument("--csv", help="per-image results (default: OUT.csv beside --json)")
    ap.add_argument("--html", help="write an offline report DIR/report.html")
    ap.add_argument("--synsets", help="category names (ILSVRC synset_words.txt) for the report")
    args = ap.parse_args(argv)
    with quiet_runtime():
        return _main(args)


def _main(args) -> int:
    t0 = time.time()
    try:
        res = run(args, args.cache or (default_cache(args.json) if args.json else None))
        summary = summarize(res)
        summary["seconds"] = round(time.time() - t0, 1)
        print_table(summary)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.json, json.dumps(summary, indent=1) + "\n")
            print(f"wrote {args.json}")
        if args.csv or args.json:
            csv_path = args.csv or str(Path(args.json).with_suffix(".csv"))
            write_csv(res, csv_path)
            print(f"wrote {csv_path}")
        if args.html:
            print(f"report: {write_html(res, summary, args.html, args.synsets)}")
    except EvaluationError as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("evaluate: interrupted; run the same command again to resume from the cache", file=sys.stderr)
        return 130
    return 0
