"""tools/describe_net.py: the seed's Table 1 from a prototxt, and the parameter count."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

import torchcaffe as caffe

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "seed" / "colorful_image_colorization_supplementary.txt"

from colorization import describe_net as dn  # noqa: E402  (tools/describe_net.py)


def _run(*args, capsys=None):
    """describe_net's command line: in this process when ``capsys`` is given, else as a subprocess."""
    if capsys is not None:
        capsys.readouterr()
        code = dn.main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err
    out = subprocess.run([sys.executable, str(REPO / "tools" / "describe_net.py"), *map(str, args)],
                         capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout, out.stderr


def seed_table1():
    """The seed's Table 1 as (header, rows); its second "conv2_1" row is conv2_2."""
    if not SEED.is_file():
        pytest.fail(f"the seed {SEED} is missing")
    lines = SEED.read_text(encoding="utf-8").splitlines()
    start = lines.index("\tX\tC\tS\tD\tSa\tDe\tBN\tL")
    rows, seen = [], set()
    for line in lines[start + 1:]:
        if not line.startswith("<b>"):
            break
        cells = [re.sub(r"</?b>", "", c) for c in line.split("\t")]
        if cells[0] in seen:
            assert cells[0] == "conv2_1"
            cells[0] = "conv2_2"
        seen.add(cells[0])
        rows.append(tuple(cells))
    return ("layer",) + tuple(lines[start].split("\t")[1:]), rows


def test_train_val_equals_the_seeds_table1_row_for_row():
    header, rows = seed_table1()
    assert len(rows) == 23 and rows[0][0] == "data" and rows[-1][0] == "conv8_3"
    code, out, err = _run(REPO / "prototxt" / "colorization_train_val.prototxt")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert tuple(lines[0].split("\t")) == header == dn.HEADER
    assert [tuple(l.split("\t")) for l in lines[1:-1]] == rows
    assert re.fullmatch(r"params \d+", lines[-1])


def test_parameter_counts_and_the_papers_32_2m():
    counts = {}
    for rel in ("prototxt/release_v2/colorization_train_val_v2.prototxt",
                "prototxt/release_v2/colorization_deploy_v2.prototxt", "prototxt/colorization_train_val.prototxt"):
        net = dn.read_net(REPO / rel)
        counts[rel] = [dn.describe(net, with_stats=s, everything=e)[1] for s, e in ((0, 0), (1, 0), (0, 1))]

    def conv(i, o, k=3):
        return i * o * k * k + o

    trunk = (conv(1, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128) + conv(128, 256) + 2 * conv(256, 256)
             + conv(256, 512) + 8 * conv(512, 512))
    release = trunk + 3 * conv(512, 512) + conv(512, 256, 4) + 2 * conv(256, 256) + conv(256, 313, 1)
    stats = 2 * (64 + 128 + 256 + 4 * 512) + 7                          # BatchNorm mean, variance, factor
    tv, dep, ours = counts.values()
    # --all adds the fixed label-pipeline blobs the released train_val has: data_l_meansub (scale, bias)
    # and data_ab_ss (2 weights, 2 biases).
    assert tv == [release, release + stats, release + stats + 2 + 4]
    assert release == 32230393 and round(release / 1e6, 1) == 32.2   # the paper's 32.2M (129 MB)
    assert round((release + stats) / 1e6, 1) == 32.2
    # The released deploy file gives its two fixed layers no lr_mult: they count (313 + 2 x 313 + 2).
    assert dep[0] == release + 313 + 2 * 313 + 2
    table1 = (trunk + conv(512, 256) + 2 * conv(256, 256) + conv(256, 128, 4) + 2 * conv(128, 128)
              + 2 * conv(512, 313, 1) + conv(256, 313, 1) + conv(128, 313, 1))
    assert ours[0] == table1 == 25414564


def _net_from_text(tmp_path, text):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


def test_static_shapes_match_the_runtime(tmp_path):
    for rel in ("prototxt/demo/colorization_deploy.prototxt", "prototxt/demo/colorization_deploy_portable.prototxt",
                "prototxt/release_v2/colorization_deploy_v2.prototxt"):
        proto = dn.read_net(REPO / rel)
        size = proto.layer[0].input_param.shape[0].dim[2]
        if size > 64:   # keep the runtime check small
            proto.layer[0].input_param.shape[0].dim[2] = proto.layer[0].input_param.shape[0].dim[3] = size = 40
        path = tmp_path / "net.prototxt"
        path.write_text(str(proto))
        shapes, _, _, _ = dn.infer(dn.filter_layers(proto, caffe.TEST), size=0)
        net = caffe.Net(str(path), caffe.TEST)
        for name, blob in net.blobs.items():
            if name in shapes:
                assert tuple(blob.data.shape) == shapes[name], (rel, name)
    # Caffe's pooling rounds up (and drops a window that starts in the padding); odd sizes round down in
    # convolutions and deconvolutions.
    n = caffe.NetSpec()
    L, P = caffe.layers, caffe.params
    n.data = L.Input(shape=dict(dim=[1, 2, 13, 11]))
    n.pool = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.pool2 = L.Pooling(n.data, pool=P.Pooling.AVE, kernel_size=2, stride=2, pad=1)
    n.conv = L.Convolution(n.pool, num_output=3, kernel_size=3, stride=2, dilation=2, pad=1)
    n.up = L.Deconvolution(n.conv, convolution_param=dict(num_output=4, kernel_size=4, stride=3, pad=1, group=1))
    n.a, n.b = L.Slice(n.pool2, ntop=2, axis=1)
    n.cat = L.Concat(n.a, n.b, n.a)
    n.ip = L.InnerProduct(n.cat, num_output=5)
    path = _net_from_text(tmp_path, str(n.to_proto()))
    proto = dn.read_net(path)
    shapes, _, params, _ = dn.infer(proto.layer, size=0)
    net = caffe.Net(str(path), caffe.TEST)
    for name, blob in net.blobs.items():
        if "_split_" not in name:   # the runtime's own Split blobs
            assert tuple(blob.data.shape) == shapes[name], name
    for layer, blobs in zip(proto.layer, params):
        if layer.name in net.params:
            assert [tuple(b.data.shape) for b in net.params[layer.name]] == blobs, layer.name


def test_accumulated_stride_rules_and_formatting(tmp_path, capsys):
    # Sa counts a layer's own upsampling (it precedes the convolution) but not its own downsampling.
    n = caffe.NetSpec()
    L = caffe.layers
    n.data = L.Input(shape=dict(dim=[1, 3, 32, 32]))
    n.c1 = L.Convolution(n.data, num_output=4, kernel_size=3, stride=2, pad=1)
    n.c2 = L.Deconvolution(n.c1, convolution_param=dict(num_output=4, kernel_size=4, stride=4))
    n.c3 = L.Convolution(n.c2, num_output=4, kernel_size=3, pad=2, dilation=2)
    n.bn = L.BatchNorm(n.c3)
    n.head = L.Convolution(n.bn, num_output=7, kernel_size=1)
    n.fixed = L.Convolution(n.c3, num_output=4, kernel_size=3, pad=1, param=[dict(lr_mult=0)] * 2)
    n.loss = L.SoftmaxWithLoss(n.head, n.data)
    path = _net_from_text(tmp_path, str(n.to_proto()))
    code, out, _ = _run(path, "--size", 0, capsys=capsys)
    assert code == 0
    assert out.splitlines() == [
        "layer\tX\tC\tS\tD\tSa\tDe\tBN\tL",
        "data\t32\t3\t-\t-\t-\t-\t-\t-",
        "c1\t16\t4\t2\t1\t1\t1\t-\t-",
        "c2\t64\t4\t.25\t1\t.5\t.5\t-\t-",
        "c3\t64\t4\t1\t2\t.5\t1\t\u2713\t\u2713",
        f"params {3*4*9+4 + 4*4*16+4 + 4*4*9+4 + 4*7+7}",
    ]


def test_errors_and_unknown_layers(tmp_path, capsys):
    code, _, err = _run(tmp_path / "missing.prototxt", capsys=capsys)
    assert code == 1 and "missing.prototxt" in err
    bad = _net_from_text(tmp_path, 'layer { name: "x" type: "ReLU" bottom: "nowhere" top: "x" }')
    code, _, err = _run(bad, capsys=capsys)
    assert code == 1 and "nowhere" in err
    odd = _net_from_text(tmp_path, 'layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 dim: 1 '
                                   'dim: 8 dim: 8 } } }\nlayer { name: "w" type: "Weird" bottom: "d" top: "w" }')
    code, out, err = _run(odd, capsys=capsys)
    assert code == 0 and "Weird" in err and out.splitlines()[-1] == "params 0"
