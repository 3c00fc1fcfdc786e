#!/usr/bin/env python
"""Draw a graph of a net's architecture (BVLC's python/draw_net.py, over torchcaffe.draw).

    python tools/draw_net.py prototxt/demo/colorization_train_val.prototxt net.png [--rankdir TB]
        [--phase TRAIN|TEST|ALL] [--display_lrm]

The output format follows the file extension (png, pdf, svg, ... via graphviz's dot; .raw: the dot source).
"""
from __future__ import annotations

import sys
from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser

from google.protobuf import text_format

import torchcaffe as caffe
from torchcaffe import draw
from torchcaffe.proto import caffe_pb2


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=ArgumentDefaultsHelpFormatter)
    parser.add_argument('input_net_proto_file', help='Input network prototxt file')
    parser.add_argument('output_image_file', help='Output image file')
    parser.add_argument('--rankdir', default='LR',
                        help='One of TB (top-bottom, i.e., vertical), RL (right-left, i.e., horizontal), or '
                             'another valid dot option; see http://www.graphviz.org/doc/info/attrs.html#k:rankdir')
    parser.add_argument('--phase', default='ALL',
                        help='Which network phase to draw: TRAIN, TEST, or ALL (all layers regardless of phase).')
    parser.add_argument('--display_lrm', action='store_true',
                        help='Show the learning rate multiplier, when non-zero, of the learning layers '
                             '(Convolution, Deconvolution, InnerProduct).')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    phases = {'TRAIN': caffe.TRAIN, 'TEST': caffe.TEST, 'ALL': None}
    if args.phase not in phases:
        print(f"draw_net.py: --phase: unknown phase {args.phase!r} (TRAIN, TEST or ALL)", file=sys.stderr)
        return 2
    net = caffe_pb2.NetParameter()
    try:
        with open(args.input_net_proto_file) as f:
            text_format.Merge(f.read(), net)
    except OSError as e:
        print(f"draw_net.py: cannot read {args.input_net_proto_file}: {e.strerror}", file=sys.stderr)
        return 1
    except text_format.ParseError as e:
        print(f"draw_net.py: {args.input_net_proto_file}: not a NetParameter prototxt: {e}", file=sys.stderr)
        return 1
    print('Drawing net to %s' % args.output_image_file)
    try:
        draw.draw_net_to_file(net, args.output_image_file, args.rankdir, phases[args.phase], args.display_lrm)
    except (ImportError, RuntimeError, ValueError, OSError) as e:
        print(f"draw_net.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
