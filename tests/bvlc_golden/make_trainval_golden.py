"""Record one forward/backward of the project's train_val nets in a real BVLC Caffe, with the project's
Python layers (``layers/colorization_layers.py``) loaded by BVLC's Python layer.

Run inside a BVLC Caffe built with Python layers (no torchcaffe is imported)::

    PYTHONPATH=$CAFFE_ROOT/python:$PWD/layers:$PWD GLOG_minloglevel=2 \\
        python tests/bvlc_golden/make_trainval_golden.py [--net demo full] [--out DIR]

It also runs BVLC's own ``caffe test`` tool on the demo net, its Data layer reading a small LMDB written
here (``trainval_case.write_caffe_test_dir``), and records the losses it prints (``caffe_test_demo.json``).

For each net (see ``trainval_case.py``: Data -> Input, a fixed batch, prior and seeded weights) it writes
``trainval_<net>.npz`` with the losses, every blob's data and diff, every parameter's diff (and the data of the
unseeded ones: BatchNorm's running statistics, the fixed layers) after one ``net.forward()`` + ``net.backward()``, the prototxt's sha256
and BVLC's ``loss`` keys.  Small arrays are stored whole, large ones as a fixed sample plus sums.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from google.protobuf import text_format

import trainval_case as case


def run(net_name: str, out_dir: Path) -> Path:
    import caffe
    from caffe.proto import caffe_pb2

    if "torchcaffe" in getattr(caffe, "__file__", "") or not hasattr(caffe, "_caffe"):
        sys.exit("make_trainval_golden.py: `import caffe` must give BVLC's pycaffe (put $CAFFE_ROOT/python "
                 "first on PYTHONPATH)")
    try:
        import colorization_layers  # noqa: F401
    except ImportError:
        sys.exit("make_trainval_golden.py: put the project's layers/ and root on PYTHONPATH")
    caffe.set_mode_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        net, out = case.run_once(net_name, tmp, caffe, caffe_pb2, text_format)
    seeded = case.random_layers(case.input_net(net_name, caffe_pb2, text_format), caffe_pb2, text_format)

    rec = {"sha256": np.array(case.prototxt_sha(net_name)), "caffe": np.array(caffe.__file__)}
    for k in sorted(out):
        rec[f"loss/{k}"] = np.array(float(np.asarray(out[k]).ravel()[0]))
    for name in net.blobs.keys():
        b = net.blobs[name]
        for what, arr in (("data", b.data), ("diff", b.diff)):
            for k, v in case.record(arr).items():
                rec[f"blob/{name}/{what}/{k}"] = v
    for name in net.params.keys():
        blobs = net.params[name]
        for i in range(len(blobs)):
            kinds = [("diff", blobs[i].diff)] + ([] if name in seeded else [("data", blobs[i].data)])
            for what, arr in kinds:
                for k, v in case.record(arr).items():
                    rec[f"param/{name}/{i}/{what}/{k}"] = v
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / case.golden_path(net_name).name
    tmp_path = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp_path, **rec)
    os.replace(tmp_path, path)
    return path


def caffe_test_command(caffe_root: Path, model, weights) -> list:
    return [str(caffe_root / "build" / "tools" / "caffe"), "test", "-model", str(model), "-weights", str(weights),
            "-iterations", str(case.CAFFE_TEST_ITERATIONS)]


def run_caffe_test(out_dir: Path) -> Path:
    """BVLC's ``caffe test`` (the C++ tool, its Data layer reading an LMDB, the Python layers loaded from
    PYTHONPATH) on the demo net; its per-batch and mean losses go to ``caffe_test_demo.json``."""
    import json
    import subprocess

    import caffe
    from caffe.proto import caffe_pb2

    caffe.set_mode_cpu()
    caffe_root = Path(caffe.__file__).resolve().parents[2]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            model, weights = case.write_caffe_test_dir(tmp, caffe, caffe_pb2, text_format)
            # the tool embeds Python: hand it this interpreter's path (pycaffe, layers/, site-packages)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                   "GLOG_logtostderr": "1", "GLOG_minloglevel": "0"}
            res = subprocess.run(caffe_test_command(caffe_root, model, weights), env=env, capture_output=True,
                                 text=True, timeout=600)
        finally:
            os.chdir(cwd)
    if res.returncode != 0:
        sys.exit(f"BVLC caffe test failed:\n{res.stderr[-3000:]}")
    result = case.parse_caffe_test_log(res.stderr)
    result.update(sha256=case.prototxt_sha(case.CAFFE_TEST_NET), caffe=str(caffe_root))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / case.CAFFE_TEST_JSON.name
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--net", nargs="+", default=list(case.NETS), choices=list(case.NETS))
    ap.add_argument("--out", type=Path, default=case.HERE)
    ap.add_argument("--no-caffe-test", action="store_true", help="skip the `caffe test` run of the demo net")
    args = ap.parse_args(argv)
    if not args.no_caffe_test:
        path = run_caffe_test(args.out)
        print(f"caffe test: {path}")
    for name in args.net:
        path = run(name, args.out)
        with np.load(path) as z:
            losses = {k[5:]: float(z[k]) for k in z.files if k.startswith("loss/")}
        print(f"{name}: {path} ({path.stat().st_size} bytes) losses {losses}")


if __name__ == "__main__":
    main()
