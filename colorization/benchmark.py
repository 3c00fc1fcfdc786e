"""The timing table: every number of the README's *Speed* section, measured in one run (``tools/benchmark.py``).

* ``deploy``: forward ms per image of a colorization deploy net at 224x224 (default: the released topology,
  ``prototxt/release_v2/colorization_deploy_v2.prototxt``, random He-normal weights saved as a caffemodel)
  in torchcaffe (``caffe.Net``, exact float32), the fast inference path (:func:`torchcaffe.fast.to_module`
  with ``optimize=True``), the plain torch.nn module of the same graph (``to_module(net)``) and OpenCV DNN
  reading the same caffemodel; batch 1 and a larger batch.  The four run interleaved, so that load from
  other processes hits all alike; each row also gives the largest difference of its output from the exact one.
  Then forward + backward (loss: the sum of the ab output) of ``caffe.Net`` against the plain module with
  autograd, interleaved (``deploy_forward_backward_ms``).
* ``train``: training images/s of the Table 1 net at 176x176 crops (a real solver step: forward, backward,
  Adam update), exact float32 and bf16 mixed precision (``caffe train -precision bf16``); the Data layer is
  replaced by an Input blob of random BGR images, so that this times the net and its colour layers.
* ``data``: the Data layer's images/s on an LMDB of synthetic JPEGs (batch 40, crop 176, mirror).
* ``soft_encoding``: the released scikit-learn ball-tree encoder (alone, and in its layer's whole forward,
  which also copies the float64 encoding into the float32 top blob) against ``cic.soft_encode`` into a blob,
  on a training batch of real ab.
* the machine: CPU model, cores, instruction sets, GPU, library versions.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch

from .paths import PROTOTXT_DIR

DEPLOY = PROTOTXT_DIR / "release_v2" / "colorization_deploy_v2.prototxt"
TRAIN_VAL = PROTOTXT_DIR / "colorization_train_val.prototxt"
#: the seed's Table 2 run-times per image
SEED_ROWS = [("Zhang et al. 2016 (seed, Caffe, K40 GPU)", 100.0), ("Cheng et al. 2015 (as the seed cites)", 4900.0)]
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


# ---------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------

def timeit(fns: Dict[str, Callable], repeats: int, sync: Callable = lambda: None, warmup: int = 2) -> dict:
    """Time several functions interleaved; returns name -> (median, min) seconds after ``warmup`` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        sync()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


@contextlib.contextmanager
def _log_level(level: int):
    """torchcaffe's log at ``level`` (1: warnings and errors) inside, as it was outside."""
    from torchcaffe import glog

    old = glog.get_level()
    glog.set_level(level)
    try:
        yield
    finally:
        glog.set_level(old)


def machine(device: str = "cpu") -> dict:
    """The machine in words: CPU model, cores, instruction sets, GPU, versions, load."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model in ("", "unknown CPU", "x86_64"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import cv2

    from torchcaffe.fast import native_bf16

    info = {"cpu": model, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "isa": [f for f in ISA_FLAGS if f in flags], "cpu_native_bf16": native_bf16("cpu"),
            "gpu": torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else None,
            "torch": torch.__version__, "opencv": cv2.__version__, "python": platform.python_version(),
            "load_average": round(os.getloadavg()[0], 2)}
    return info


# ---------------------------------------------------------------------------------------------------------
# deploy forward
# ---------------------------------------------------------------------------------------------------------

def deploy_forward(prototxt=DEPLOY, batches=(1, 8), repeats: int = 10, device: str = "cpu",
                   size: int = 224, log=print) -> dict:
    """ms per image of each runtime at each batch size: {batch: {runtime: ms}}, plus max |difference|."""
    with _log_level(1):
        return _deploy_forward(prototxt, batches, repeats, device, size, log)


def _deploy_forward(prototxt, batches, repeats, device, size, log) -> dict:
    import cv2

    import torchcaffe as caffe
    from torchcaffe.fast import to_module

    from .colorizer import ab_output, random_colorization_weights

    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    net = caffe.Net(str(prototxt), caffe.TEST, device="cpu")
    random_colorization_weights(net, seed=0)
    out = ab_output(net)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "random.caffemodel"
        net.save(str(model))
        cvnet = cv2.dnn.readNetFromCaffe(str(prototxt), str(model))
    net.to(dev)
    results, diffs = {}, {}
    for b in batches:
        x = torch.from_numpy(np.random.default_rng(b).uniform(-50, 50, (b, 1, size, size)).astype(np.float32))
        blob = net.blobs["data_l"]
        blob.reshape(*x.shape)
        net.reshape()
        xd = x.to(dev)
        t0 = time.perf_counter()
        fast = to_module(net, outputs=[out], optimize=True)
        ref = to_module(net, outputs=[out])
        setup = time.perf_counter() - t0
        xn = x.numpy()

        def run_exact():
            blob.data_t = xd
            net.forward_loss()
            return net.blobs[out].data_t

        def run_cv():
            cvnet.setInput(xn)
            return cvnet.forward(out)

        fns = {"torchcaffe": run_exact, "torchcaffe_optimized": lambda: fast(xd)[out],
               "pytorch_reference": lambda: ref(xd)[out], "opencv_dnn": run_cv}
        with torch.no_grad():
            exact = run_exact().cpu().numpy().copy()
            res = timeit(fns, repeats, sync)
            diffs[b] = {k: float(np.abs(np.asarray(fn().cpu() if k != "opencv_dnn" else fn()) - exact).max())
                        for k, fn in fns.items()}
        results[b] = {k: 1000 * med / b for k, (med, _) in res.items()}
        log(f"  batch {b}: " + ", ".join(f"{k} {v:.1f} ms/image" for k, v in results[b].items())
            + f" (building both modules {setup:.1f} s; this batch size in all "
              f"{time.perf_counter() - t0:.1f} s)")
    return {"per_image_ms": results, "max_abs_diff_vs_exact": diffs, "prototxt": str(prototxt), "output": out}


def deploy_forward_backward(prototxt=DEPLOY, batch: int = 1, repeats: int = 5, device: str = "cpu",
                            size: int = 224, log=print) -> dict:
    """ms per image of a forward and backward pass (loss: the sum of the ab output) of the exact ``caffe.Net``
    (``force_backward``, as ``caffe time`` runs it) and of the plain torch.nn module of the same graph with
    autograd (``to_module(net)``, weights and input requiring gradients), interleaved in the same run; plus
    the largest difference of the input gradients, relative to their largest magnitude."""
    with _log_level(1):
        return _deploy_forward_backward(prototxt, batch, repeats, device, size, log)


def _deploy_forward_backward(prototxt, batch, repeats, device, size, log) -> dict:
    import torchcaffe as caffe
    from torchcaffe.fast import to_module
    from torchcaffe.protoio import read_net_param

    from .colorizer import ab_output, random_colorization_weights

    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    param = read_net_param(str(prototxt))
    param.force_backward = True
    net = caffe.Net(param, caffe.TEST, device="cpu")
    random_colorization_weights(net, seed=0)
    out = ab_output(net)
    x = torch.from_numpy(np.random.default_rng(batch).uniform(-50, 50, (batch, 1, size, size)).astype(np.float32))
    blob = net.blobs[net.inputs[0] if net.inputs else "data_l"]
    blob.reshape(*x.shape)
    net.reshape()
    net.to(dev)
    xd = x.to(dev)
    ref = to_module(net, outputs=[out])
    params = list(ref.parameters())
    for p in params:
        p.requires_grad_(True)
    top = net.blobs[out]
    # backward from the layer that computes the output (the released file's Silence after it zeroes its diff)
    start = max(i for i, name in enumerate(net._layer_names) if out in net.top_names[name])

    def run_exact():
        blob.data_t = xd
        net.clear_param_diffs()
        net.forward_loss()
        top.diff_t = torch.ones_like(top.data_t)
        net.backward_from_to(start)
        return blob.diff_t

    def run_ref():
        xr = xd.clone().requires_grad_(True)
        for p in params:
            p.grad = None
        ref(xr)[out].sum().backward()
        return xr.grad

    fns = {"torchcaffe": run_exact, "pytorch_reference": run_ref}
    g_exact = run_exact().detach().cpu().clone()
    g_ref = run_ref().detach().cpu()
    res = timeit(fns, repeats, sync)
    ms = {k: 1000 * med / batch for k, (med, _) in res.items()}
    ratio = ms["torchcaffe"] / ms["pytorch_reference"]
    diff = float((g_exact - g_ref).abs().max() / max(float(g_exact.abs().max()), 1e-30))
    log(f"  batch {batch}: torchcaffe {ms['torchcaffe']:.1f} ms/image, pytorch_reference "
        f"{ms['pytorch_reference']:.1f} ms/image ({ratio:.2f}x); input gradients differ by {diff:.1e} relative")
    return {"per_image_ms": ms, "ratio": ratio, "batch": batch, "input_grad_max_rel_diff": diff,
            "prototxt": str(prototxt), "output": out}


# ---------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------

def _bench_train_param(prototxt, batch: int, crop: int, prior_path: str):
    """The TRAIN net of ``prototxt`` with its Data layer replaced by an Input blob (batch x 3 x crop x crop)
    and the PriorBoost layers reading ``prior_path``."""
    from torchcaffe.net import filter_net
    from torchcaffe.protoio import read_net_param
    from torchcaffe.proto import caffe_pb2

    param = read_net_param(str(prototxt))
    param.state.phase = caffe_pb2.TRAIN
    param = filter_net(param)
    for lp in param.layer:
        if lp.type == "Data":
            top = lp.top[0]
            lp.Clear()
            lp.name, lp.type = "data", "Input"
            lp.top.append(top)
            lp.input_param.shape.add().dim.extend([batch, 3, crop, crop])
        if lp.type == "Python" and lp.python_param.layer == "PriorBoostLayer":
            cfg = json.loads(lp.python_param.param_str or "{}")
            cfg["prior"] = prior_path
            lp.python_param.param_str = json.dumps(cfg)
    return param


def train_rate(prototxt=TRAIN_VAL, batch: int = 40, crop: int = 176, iterations: int = 3,
               precisions=("fp32", "bf16"), device: str = "cpu", log=print) -> dict:
    """Training images/s (solver steps: forward, backward, Adam update) per precision."""
    with _log_level(2):
        return _train_rate(prototxt, batch, crop, iterations, precisions, device, log)


def _train_rate(prototxt, batch, crop, iterations, precisions, device, log) -> dict:
    import torchcaffe as caffe
    from torchcaffe.proto import caffe_pb2
    from torchcaffe.solver import get_solver

    import cic

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        prior = np.random.default_rng(0).uniform(0.1, 1.0, cic.Q).astype(np.float32)
        prior_path = os.path.join(tmp, "prior.npy")
        np.save(prior_path, prior / prior.sum())
        for precision in precisions:
            sp = caffe_pb2.SolverParameter()
            sp.net_param.CopyFrom(_bench_train_param(prototxt, batch, crop, prior_path))
            sp.type, sp.base_lr, sp.momentum, sp.momentum2 = "Adam", 1e-5, 0.9, 0.99
            sp.lr_policy, sp.max_iter, sp.display, sp.snapshot = "fixed", 10 ** 6, 0, 0
            sp.random_seed = 1
            if torch.device(device).type == "cuda":
                caffe.set_mode_gpu()
                caffe.set_device(torch.device(device).index or 0)
            else:
                caffe.set_mode_cpu()
            solver = get_solver(sp)
            data = solver.net.blobs["data"]
            rng = np.random.default_rng(0)
            data.data_t = torch.from_numpy(rng.integers(0, 256, data.shape).astype(np.float32))
            old = os.environ.get("TORCHCAFFE_PRECISION")
            os.environ["TORCHCAFFE_PRECISION"] = precision
            try:
                sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
                solver.step(1)  # warm-up
                sync()
                t0 = time.perf_counter()
                solver.step(iterations)
                sync()
                dt = time.perf_counter() - t0
            finally:
                if old is None:
                    os.environ.pop("TORCHCAFFE_PRECISION", None)
                else:
                    os.environ["TORCHCAFFE_PRECISION"] = old
            out[precision] = batch * iterations / dt
            log(f"  {precision}: {out[precision]:.2f} images/s ({dt / iterations:.2f} s per iteration of {batch})")
            del solver
    return out


# ---------------------------------------------------------------------------------------------------------
# data layer, soft-encoding
# ---------------------------------------------------------------------------------------------------------

def data_layer_rate(lmdb: Optional[str] = None, n: int = 200, batches: int = 50, batch: int = 40, crop: int = 176,
                    prefetch: int = 4, device: str = "cpu", phase: str = "TRAIN", log=print) -> float:
    """Images/s that a Data layer delivers (TRAIN: random crop, mirror), the net doing nothing else: the
    prefetch thread's rate (reading, parsing, cropping, mirroring, converting to float32)."""
    from google.protobuf import text_format

    from torchcaffe.blob import Blob
    from torchcaffe.layer import create_layer
    from torchcaffe.proto import caffe_pb2

    with tempfile.TemporaryDirectory() as tmp:
        src = lmdb or _synthetic_lmdb(tmp, n)
        lp = caffe_pb2.LayerParameter()
        text_format.Parse(f'name: "data" type: "Data" top: "data" top: "label" '
                          f'transform_param {{ crop_size: {crop} mirror: true }} '
                          f'data_param {{ source: "{src}" batch_size: {batch} backend: LMDB prefetch: {prefetch} }}', lp)
        torch.manual_seed(0)
        layer = create_layer(lp, caffe_pb2.TRAIN if phase == "TRAIN" else caffe_pb2.TEST, torch.device(device))
        top = [Blob(device=device), Blob(device=device)]
        layer.setup([], top)
        try:
            for _ in range(3):
                layer.forward([], top)
            sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
            sync()
            t = time.perf_counter()
            for _ in range(batches):
                layer.forward([], top)
            sync()
            dt = time.perf_counter() - t
        finally:
            layer.close()
    rate = batches * batch / dt
    log(f"  Data layer ({phase}, batch {batch}, crop {crop}, mirror, prefetch {prefetch}, device {device}): "
        f"{rate:.0f} images/s ({1000 * dt / batches:.1f} ms per batch); load average {os.getloadavg()[0]:.2f}")
    return rate


def _synthetic_lmdb(folder: str, n: int) -> str:
    """An LMDB of ``n`` ImageNet-like JPEGs (``colorization.synthetic.make_jpegs``) at 256x256, built by the
    LMDB builder (tools/build_lmdb.py) in a process of its own."""
    import subprocess
    import sys

    from .synthetic import make_jpegs

    root = os.path.join(folder, "imagenet")
    make_jpegs(root, n)
    out = os.path.join(folder, "lmdb")
    subprocess.run([sys.executable, "-m", "colorization.build_lmdb", "--root", root, "--split", "train",
                    "--out", out, "--quiet"], check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return out


class ReleasedNNEncode:
    """The released layer's encoder (scikit-learn ball tree, 10 neighbours), re-written for timing.

    The released ``NNEncLayer`` fitted ``NearestNeighbors(n_neighbors=10, algorithm='ball_tree')`` on the 313
    bin centres once, and per batch flattened ab to (N*H*W, 2), queried the neighbours, computed Gaussian
    weights (sigma 5), scattered them into a dense (N*H*W, 313) array and reshaped it to N x 313 x H x W."""

    def __init__(self, centers: np.ndarray, k: int = 10, sigma: float = 5.0):
        from sklearn.neighbors import NearestNeighbors

        self.centers = centers.astype(np.float64)
        self.k, self.sigma = k, sigma
        self.nbrs = NearestNeighbors(n_neighbors=k, algorithm="ball_tree").fit(self.centers)

    def encode(self, ab: np.ndarray) -> np.ndarray:
        n, _, h, w = ab.shape
        flat = ab.transpose(0, 2, 3, 1).reshape(-1, 2)
        dists, inds = self.nbrs.kneighbors(flat)
        wts = np.exp(-dists ** 2 / (2 * self.sigma ** 2))
        wts /= wts.sum(axis=1, keepdims=True)
        enc = np.zeros((flat.shape[0], len(self.centers)))
        enc[np.arange(flat.shape[0])[:, None], inds] = wts
        return enc.reshape(n, h, w, -1).transpose(0, 3, 1, 2)

    def layer_forward(self, ab: np.ndarray, top: np.ndarray) -> None:
        """The released ``NNEncLayer.forward``: ``top[0].data[...] = encode(bottom[0].data)``, i.e. the encoding
        and its copy into the float32 N x 313 x H x W top blob."""
        top[...] = self.encode(ab)


SOFT_SHAPE = (40, 2, 56, 56)


def real_ab_batch(seed: int = 0, shape=SOFT_SHAPE) -> np.ndarray:
    """N x 2 x 56 x 56 ab of random crops of scikit-image's colour photos, subsampled by 4 as the training
    net subsamples its ab target."""
    from skimage import data

    import cic

    photos = [getattr(data, n)() for n in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")]
    rng = np.random.default_rng(seed)
    out = np.empty(shape, np.float32)
    side = 4 * shape[2]
    for i in range(shape[0]):
        img = photos[i % len(photos)]
        y = rng.integers(0, img.shape[0] - side + 1)
        x = rng.integers(0, img.shape[1] - side + 1)
        lab = cic.rgb2lab(img[y:y + side:4, x:x + side:4])
        out[i] = lab[..., 1:].transpose(2, 0, 1)
    return out


def soft_encoding(repeats: int = 5, device: str = "cpu", log=print, threads=(1, 2), shape=SOFT_SHAPE) -> dict:
    """ms of the released encoder (single-threaded, as scikit-learn's ball tree queries) and of
    ``cic.soft_encode`` (k = 10 as released; into a reused blob, as the layer does) on a real training batch,
    interleaved; on the CPU once per torch thread count in ``threads`` (``by_threads``; the top-level keys
    are the first count's).  And the speed-up (the ratio of the medians)."""
    import cic

    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    released = ReleasedNNEncode(cic.load_bins())
    ab = real_ab_batch(shape=shape)
    ab_t = torch.from_numpy(ab).to(dev)
    buf = torch.empty((ab.shape[0], cic.Q) + ab.shape[2:], device=dev)
    top = np.empty(tuple(buf.shape), np.float32)                   # the released layer's top blob
    saved = torch.get_num_threads()
    by = {}
    try:
        for t in (threads if dev.type == "cpu" else (saved,)):
            torch.set_num_threads(t)
            res = timeit({"sklearn": lambda: released.encode(ab),
                          "sklearn_layer": lambda: released.layer_forward(ab, top),
                          "cic": lambda: cic.soft_encode(ab_t, k=10, out=buf)}, repeats, sync, warmup=1)
            one = {"sklearn_ball_tree_ms": 1000 * res["sklearn"][0], "cic_ms": 1000 * res["cic"][0],
                   "released_layer_forward_ms": 1000 * res["sklearn_layer"][0]}
            one["speedup"] = one["sklearn_ball_tree_ms"] / one["cic_ms"]
            one["speedup_vs_layer_forward"] = one["released_layer_forward_ms"] / one["cic_ms"]
            by[str(t)] = one
            log(f"  soft-encoding {'x'.join(map(str, shape))} (k = 10), {t} torch thread(s): released ball tree "
                f"{one['sklearn_ball_tree_ms']:.1f} ms (its layer's forward, with the copy into the top blob, "
                f"{one['released_layer_forward_ms']:.1f} ms), cic.soft_encode into the blob {one['cic_ms']:.1f} ms "
                f"({one['speedup']:.1f}x; {one['speedup_vs_layer_forward']:.1f}x the layer)")
    finally:
        torch.set_num_threads(saved)
    out = dict(next(iter(by.values())))
    out["by_threads"] = by
    return out


# ---------------------------------------------------------------------------------------------------------
# the whole table
# ---------------------------------------------------------------------------------------------------------

def run(prototxt=DEPLOY, batches=(1, 8), repeats: int = 10, train_iterations: int = 3, train_batch: int = 40,
        data_batches: int = 50, soft_repeats: int = 5, device: str = "cpu", sections=("deploy", "train", "data", "soft"),
        log=print) -> dict:
    result = {"machine": machine(device), "device": device}
    m = result["machine"]
    log(f"machine: {m['cpu']}, {m['cpus']} CPUs ({', '.join(m['isa']) or 'no AVX2'}), GPU: {m['gpu'] or 'none'}; "
        f"torch {m['torch']} ({m['torch_threads']} threads), OpenCV {m['opencv']}; load average {m['load_average']}")
    if "deploy" in sections:
        log(f"deploy forward, {Path(prototxt).name} at 224x224, ms per image (median of {repeats}):")
        d = deploy_forward(prototxt, batches, repeats, device, log=log)
        result["deploy"] = d
        result["deploy_forward_ms"] = d["per_image_ms"][batches[0]]
        result["deploy_forward_ms_by_batch"] = {str(b): v for b, v in d["per_image_ms"].items()}
        log(f"deploy forward + backward (loss: sum of the ab output), batch {batches[0]}, ms per image "
            f"(median of {repeats}):")
        fb = deploy_forward_backward(prototxt, batches[0], repeats, device, log=log)
        result["deploy_backward"] = fb
        result["deploy_forward_backward_ms"] = fb["per_image_ms"]
    if "train" in sections:
        log(f"training, Table 1 net, {train_batch} crops of 176x176, {train_iterations} solver steps:")
        result["train_images_per_s"] = train_rate(batch=train_batch, iterations=train_iterations, device=device, log=log)
    if "data" in sections:
        log("Data layer:")
        result["data_layer_images_per_s"] = data_layer_rate(batches=data_batches, device=device, log=log)
    if "soft" in sections:
        log("soft-encoding:")
        result["soft_encoding"] = soft_encoding(soft_repeats, device, log=log)
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    return result


def markdown(result: dict) -> str:
    """The README's timing table from one run's result."""
    m = result["machine"]
    where = m["gpu"] or f"{m['cpu']}, {m['cpus']} CPUs ({', '.join(m['isa'])})"
    lines = [f"Measured by `python tools/benchmark.py` on {where}; torch {m['torch']}, OpenCV {m['opencv']}; "
             f"load average {m['load_average']} before, {result.get('load_average_after')} after.", ""]
    if "deploy" in result:
        per = result["deploy"]["per_image_ms"]
        bs = list(per)
        lines += ["| deploy net, 224x224, ms per image | " + " | ".join(f"batch {b}" for b in bs) + " |",
                  "| --- | " + " | ".join("---" for _ in bs) + " |"]
        names = {"torchcaffe": "torchcaffe `caffe.Net` (exact fp32)",
                 "torchcaffe_optimized": "torchcaffe fast path (`torchcaffe.fast`, default in the tools)",
                 "pytorch_reference": "plain PyTorch module of the same graph (fp32)", "opencv_dnn": "OpenCV DNN"}
        for k, label in names.items():
            lines.append(f"| {label} | " + " | ".join(f"{per[b][k]:.1f}" for b in bs) + " |")
        for label, ms in SEED_ROWS:
            lines.append(f"| {label} | {ms:.0f} | |")
        lines.append("")
    if "deploy_forward_backward_ms" in result:
        fb = result["deploy_forward_backward_ms"]
        lines += [f"Forward + backward, batch {result['deploy_backward']['batch']}: torchcaffe `caffe.Net` (exact "
                  f"fp32) {fb['torchcaffe']:.1f} ms per image, plain PyTorch module with autograd "
                  f"{fb['pytorch_reference']:.1f} ms ({fb['torchcaffe'] / fb['pytorch_reference']:.2f}x).", ""]
    if "train_images_per_s" in result:
        t = result["train_images_per_s"]
        lines.append("Training (Table 1 net, 176x176 crops): " + ", ".join(f"{k} {v:.2f} images/s" for k, v in t.items()))
    if "data_layer_images_per_s" in result:
        lines.append(f"Data layer: {result['data_layer_images_per_s']:.0f} images/s.")
    if "soft_encoding" in result:
        s = result["soft_encoding"]
        lines.append("Soft-encoding (40x2x56x56, k = 10): " + "; ".join(
            f"{t} thread(s): released ball tree {v['sklearn_ball_tree_ms']:.1f} ms, cic {v['cic_ms']:.1f} ms "
            f"({v['speedup']:.1f}x; the released layer's whole forward, with its copy into the top blob, "
            f"{v['released_layer_forward_ms']:.1f} ms: {v['speedup_vs_layer_forward']:.1f}x)"
            for t, v in s.get("by_threads", {"": s}).items()) + ".")
    return "\n".join(lines) + "\n"
