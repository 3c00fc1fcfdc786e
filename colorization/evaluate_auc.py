"""The evaluate_auc command line (``tools/evaluate_auc.py``, console command ``cic-evaluate-auc``): the
paper's AuC metrics of a colorization model over an LMDB split (e.g. the 9803-image test split).

    python tools/evaluate_auc.py -prototxt prototxt/colorization_deploy.prototxt -caffemodel W.caffemodel \\
        -lmdb data/lmdb/test [-prior data/prior_probs.npy] [-batch 10] [-limit N] [-gpu 0]

Each stored image (BGR, as the builder writes it) is converted to Lab; the net sees its L - 50 at the stored
size (256x256 for the paper's splits), its ab prediction is upsampled to that size and compared with the
image's own ab: the fraction of pixels within an ab distance t, for t = 0..150, averaged over t (raw AuC),
and the same with each pixel weighted inversely to the prior probability of its ground-truth bin
(class-rebalanced AuC).  The all-gray prediction (ab = 0) is scored alongside as the baseline
(the paper, Table 1: 89.5 % / 67.3 % for the full model).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

import cic
import torchcaffe as caffe

from .colorizer import Colorizer, torch_device
from .paths import DEFAULT_PROTOTXT


def data_net(lmdb: str, batch: int, device: str):
    """A one-layer net around the runtime's own Data layer (TEST: no crop, no mirror)."""
    n = caffe.NetSpec()
    n.data = caffe.layers.Data(source=lmdb, batch_size=batch, backend=caffe.params.Data.LMDB, ntop=1)
    return caffe.Net(n.to_proto(), caffe.TEST, device=device)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="evaluate_auc", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-prototxt", "--prototxt", default=str(DEFAULT_PROTOTXT))
    ap.add_argument("-caffemodel", "--caffemodel", required=True)
    ap.add_argument("-lmdb", "--lmdb", required=True, help="LMDB of raw or encoded Datums (BGR)")
    ap.add_argument("-prior", "--prior", default="data/prior_probs.npy",
                    help="prior for the rebalanced AuC (a relative name: the working directory, then the toolkit's data/)")
    ap.add_argument("-batch", "--batch", type=int, default=10)
    ap.add_argument("-limit", "--limit", type=int, default=0, help="score only the first N images")
    ap.add_argument("-gpu", "--gpu", type=int, default=-1)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import lmdb
    from google.protobuf.message import DecodeError

    caffe.init_log(1)  # the runtime's INFO lines would interleave with the progress bar
    try:
        return evaluate(args)
    except (ValueError, RuntimeError, OSError, lmdb.Error, DecodeError) as e:
        print(f"evaluate_auc: {e}", file=sys.stderr)
        return 1


def evaluate(args) -> int:
    from tqdm import tqdm

    if args.batch < 1:
        raise ValueError(f"-batch {args.batch}: must be at least 1")
    device = torch_device(args.gpu)
    for flag, path in (("-prototxt", args.prototxt), ("-caffemodel", args.caffemodel)):
        if not os.path.isfile(path):
            raise ValueError(f"{flag} {path}: no such file")
    if not os.path.isfile(os.path.join(args.lmdb, "data.mdb")):
        raise ValueError(f"-lmdb {args.lmdb}: " + ("not an LMDB (no data.mdb in it)" if os.path.isdir(args.lmdb)
                                                  else "no such LMDB folder"))
    model = Colorizer(args.prototxt, args.caffemodel, device=device)
    prior = torch.from_numpy(cic.load_prior(args.prior))
    import lmdb
    from google.protobuf.message import DecodeError

    try:
        with lmdb.open(args.lmdb, readonly=True, lock=False) as env:
            total = env.stat()["entries"]
        data = data_net(args.lmdb, args.batch, device)
    except (ValueError, RuntimeError, lmdb.Error, DecodeError) as e:
        raise ValueError(str(e) if args.lmdb in str(e) else f"-lmdb {args.lmdb}: {e}") from None
    count = min(total, args.limit) if args.limit else total
    meters = {"model": cic.AucMeter(), "gray (ab = 0)": cic.AucMeter()}
    done = 0
    with torch.no_grad(), tqdm(total=count, unit="img", file=sys.stderr) as bar:
        while done < count:
            try:
                data.forward_loss()
            except (ValueError, RuntimeError, lmdb.Error, DecodeError) as e:
                raise ValueError(str(e) if args.lmdb in str(e) else f"-lmdb {args.lmdb}: {e}") from None
            take = min(args.batch, count - done)  # the Data layer wraps around: keep each image once
            lab = cic.bgr255_to_lab(data.blobs["data"].data_t[:take])
            gt = lab[:, 1:]
            meters["model"].update(model.predict_ab_full(lab[:, :1]), gt)
            meters["gray (ab = 0)"].update(torch.zeros_like(gt), gt)
            done += take
            bar.update(take)
    print(f"{count} images of {args.lmdb}")
    for name, m in meters.items():
        print(f"{name:>14}: AuC {100 * m.auc():.2f} %, class-rebalanced AuC {100 * m.rebalanced_auc(prior):.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
