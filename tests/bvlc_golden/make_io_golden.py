"""Record what BVLC pycaffe's ``caffe.io`` gives on fixed inputs (``io_golden.npz`` beside this file).

Run inside a BVLC Caffe build (no torchcaffe is imported)::

    PYTHONPATH=$CAFFE_ROOT/python python tests/bvlc_golden/make_io_golden.py [--out DIR]

Every case is a function of seeded inputs; the npz holds ``<case>/in/...`` and ``<case>/out/...`` arrays
(serialized protos as uint8 bytes).  A case BVLC's code cannot run with this machine's libraries (pycaffe
calls ``ndarray.tostring`` and binary ``np.fromstring``, gone in numpy 2; ``load_image`` passes
``as_grey``, gone from scikit-image)
is listed under ``failed`` with the error, not recorded; two renamed library calls are given back their old
names for BVLC's module (see ``_old_library_names``).  Resizes of 1- and 3-channel images are left out:
there pycaffe's result depends on the installed scikit-image's defaults (anti-aliasing, border mode),
which torchcaffe pins to those of Caffe's day (tested in test_caffe_io.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def cases(io, caffe_pb2):
    rng = np.random.RandomState(7)
    img = rng.uniform(0, 1, (6, 7, 3)).astype(np.float32)

    def transformer(mean):
        t = io.Transformer({"data": (2, 3, 6, 7)})
        t.set_transpose("data", (2, 0, 1))
        t.set_channel_swap("data", (2, 1, 0))
        t.set_raw_scale("data", 255.0)
        t.set_mean("data", mean)
        t.set_input_scale("data", 0.017)
        return t

    mean_c = np.array([104.0, 117.0, 123.0])
    mean_full = rng.uniform(90, 130, (3, 6, 7)).astype(np.float32)

    def pre_channel_mean():
        t = transformer(mean_c)
        out = t.preprocess("data", img)
        return {"img": img, "mean": mean_c}, {"pre": out, "de": t.deprocess("data", out)}

    def pre_full_mean():
        t = transformer(mean_full)
        out = t.preprocess("data", img)
        return {"img": img, "mean": mean_full}, {"pre": out, "de": t.deprocess("data", out)}

    def pre_transpose_only():
        t = io.Transformer({"x": (1, 3, 6, 7)})
        t.set_transpose("x", (2, 0, 1))
        return {"img": img}, {"pre": t.preprocess("x", img)}

    def oversample():
        ims = [rng.uniform(0, 1, (9, 11, 2)).astype(np.float32) for _ in range(2)]
        return {"ims": np.stack(ims)}, {"crops": io.oversample(ims, (4, 5))}

    def resize_zoom():
        two = rng.uniform(0, 1, (5, 6, 2)).astype(np.float32)
        four = rng.uniform(0, 1, (5, 6, 4)).astype(np.float32)
        return {"two": two, "four": four}, {"two_up": io.resize_image(two, (9, 13)),
                                            "two_down": io.resize_image(two, (3, 4)),
                                            "four_o0": io.resize_image(four, (7, 8), interp_order=0)}

    def resize_constant():
        c = np.full((4, 5, 3), 0.3, np.float32)
        return {"c": c}, {"out": io.resize_image(c, (8, 3))}

    def blobproto():
        a = rng.standard_normal((2, 3, 4))
        d = rng.standard_normal((2, 3, 4))
        bp = io.array_to_blobproto(a, d)
        legacy = caffe_pb2.BlobProto(num=2, channels=1, height=2, width=3, data=list(range(12)),
                                     diff=list(range(12, 24)))
        return {"a": a, "d": d}, {
            "proto": np.frombuffer(bp.SerializeToString(), np.uint8),
            "back": io.blobproto_to_array(bp), "back_diff": io.blobproto_to_array(bp, return_diff=True),
            "legacy_proto": np.frombuffer(legacy.SerializeToString(), np.uint8),
            "legacy": io.blobproto_to_array(legacy), "legacy_diff": io.blobproto_to_array(legacy, True)}

    def blobprotovector():
        arrs = [rng.standard_normal((2, 2)), np.arange(5.0), rng.standard_normal((1, 2, 1, 3))]
        s = io.arraylist_to_blobprotovector_str(arrs)
        back = io.blobprotovector_str_to_arraylist(s)
        return ({f"a{i}": a for i, a in enumerate(arrs)},
                {"str": np.frombuffer(s, np.uint8), **{f"b{i}": b for i, b in enumerate(back)}})

    def datum_float():
        arr = rng.standard_normal((2, 3, 4))
        d = io.array_to_datum(arr, label=5)
        return {"arr": arr}, {"datum": np.frombuffer(d.SerializeToString(), np.uint8),
                              "back": io.datum_to_array(d)}

    def datum_uint8():
        arr = rng.randint(0, 256, (3, 2, 4)).astype(np.uint8)
        d = io.array_to_datum(arr)
        return {"arr": arr}, {"datum": np.frombuffer(d.SerializeToString(), np.uint8),
                              "back": io.datum_to_array(d)}

    def datum_uint8_parsed():
        # the reading direction alone (BVLC's writer needs ndarray.tostring)
        arr = rng.randint(0, 256, (3, 2, 4)).astype(np.uint8)
        d = caffe_pb2.Datum(channels=3, height=2, width=4, data=arr.tobytes(), label=2)
        return {"datum": np.frombuffer(d.SerializeToString(), np.uint8)}, {"back": io.datum_to_array(d)}

    def load_image():
        path = "io_golden_img.png"
        import skimage.io
        skimage.io.imsave(path, (img * 255).astype(np.uint8), check_contrast=False)
        try:
            png = np.frombuffer(Path(path).read_bytes(), np.uint8)
            return {"png": png}, {"color": io.load_image(path), "gray": io.load_image(path, color=False)}
        finally:
            os.unlink(path)

    return {f.__name__: f for f in (pre_channel_mean, pre_full_mean, pre_transpose_only, oversample,
                                    resize_zoom, resize_constant, blobproto, blobprotovector, datum_float,
                                    datum_uint8, datum_uint8_parsed, load_image)}


def _old_library_names(io):
    """Give BVLC's io module the two library calls of its day that this machine's libraries renamed, with
    their old meaning: binary ``np.fromstring`` (a copy of ``np.frombuffer``) and scikit-image's
    ``imread(..., as_grey=)`` (now ``as_gray``).  Only the names change; ``ndarray.tostring`` cannot be
    given back (a builtin type), so ``array_to_datum`` of uint8 stays unrecorded."""
    import types

    import skimage.io

    def fromstring(s, dtype=float, count=-1, sep=""):
        if sep:
            return np.fromstring(s, dtype=dtype, count=count, sep=sep)
        return np.frombuffer(s, dtype=dtype, count=count).copy()

    def imread(fname, as_grey=False, **kwargs):
        return skimage.io.imread(fname, as_gray=as_grey, **kwargs)

    io.np = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    io.np.fromstring = fromstring
    io.skimage = types.SimpleNamespace(img_as_float=io.skimage.img_as_float,
                                       io=types.SimpleNamespace(imread=imread))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args(argv)
    import caffe
    import caffe.io as io
    from caffe.proto import caffe_pb2

    if not hasattr(caffe, "_caffe"):
        sys.exit("make_io_golden.py: `import caffe` must give BVLC's pycaffe ($CAFFE_ROOT/python first on PYTHONPATH)")
    _old_library_names(io)
    rec, failed = {}, []
    for name, fn in cases(io, caffe_pb2).items():
        try:
            ins, outs = fn()
        except Exception as e:  # noqa: BLE001 -- recorded: BVLC's code cannot run here
            failed.append(f"{name}: {type(e).__name__}: {e}")
            continue
        rec.update({f"{name}/in/{k}": np.asarray(v) for k, v in ins.items()})
        rec.update({f"{name}/out/{k}": np.asarray(v) for k, v in outs.items()})
        rec[f"{name}/ok"] = np.array(True)
    rec["failed"] = np.array(failed)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "io_golden.npz"
    np.savez_compressed(path, **rec)
    print(f"{path}: {sum(k.endswith('/ok') for k in rec)} cases recorded; failed in BVLC: {failed}")


if __name__ == "__main__":
    main()
