#!/usr/bin/env python3
"""Colorize one image (or several) with a colorization deploy net.

    python tools/colorize_image.py -img_in photo.jpg -img_out photo_color.png \\
        [-prototxt prototxt/colorization_deploy.prototxt] [-caffemodel weights.caffemodel] [-gpu 0] [-exact]

Works with this toolkit's deploy nets and with the released ``colorization_deploy_v2.prototxt`` +
``colorization_release_v2.caffemodel`` (flags as the released demo script names them; ``--flag`` works too).
The input's own lightness is kept; only ab is predicted.  A gray or colour input is accepted.
"""
import argparse
import sys
import time
from pathlib import Path


from colorization.colorizer import DEFAULT_PROTOTXT, Colorizer, read_image, write_image


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 prefix_chars="-")
    ap.add_argument("-img_in", "--img_in", nargs="+", required=True, help="input image(s)")
    ap.add_argument("-img_out", "--img_out", nargs="+", required=True,
                    help="output image(s), one per input (or a folder when several inputs)")
    ap.add_argument("-prototxt", "--prototxt", default=str(DEFAULT_PROTOTXT), help="deploy net")
    ap.add_argument("-caffemodel", "--caffemodel", default=None,
                    help="weights (.caffemodel or .h5); without it the net's initial weights are used")
    ap.add_argument("-gpu", "--gpu", type=int, default=-1, help="CUDA device id; -1 (default) is the CPU")
    ap.add_argument("-exact", "--exact", action="store_true",
                    help="Caffe's exact float32 (default: the fast inference path, torchcaffe.fast)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    ins = [Path(p) for p in args.img_in]
    outs = [Path(p) for p in args.img_out]
    if len(outs) == 1 and len(ins) > 1:
        outs[0].mkdir(parents=True, exist_ok=True)
        outs = [outs[0] / (p.stem + "_color.png") for p in ins]
    if len(outs) != len(ins):
        print(f"colorize_image: {len(ins)} inputs but {len(outs)} outputs", file=sys.stderr)
        return 2
    device = "cpu" if args.gpu < 0 else f"cuda:{args.gpu}"
    import torchcaffe

    torchcaffe.init_log(1)  # warnings and errors only
    try:
        model = Colorizer(args.prototxt, args.caffemodel, device=device, fast=not args.exact)
        if model.filled:
            print(f"filled in fixed layers the weights lack: {', '.join(model.filled)}")
        for src, dst in zip(ins, outs):
            t0 = time.perf_counter()
            out = model.colorize(read_image(src))
            write_image(dst, out)
            print(f"{src} -> {dst} ({out.shape[1]}x{out.shape[0]}, {1000 * (time.perf_counter() - t0):.0f} ms)")
    except (OSError, ValueError) as e:
        print(f"colorize_image: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
