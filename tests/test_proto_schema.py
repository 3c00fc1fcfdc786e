"""The committed caffe_pb2.py is generated from caffe.proto, and the schema keeps BVLC Caffe's numbering."""
import subprocess
import sys

from conftest import REPO
from torchcaffe.proto import caffe_pb2


def test_committed_module_matches_the_schema():
    r = subprocess.run([sys.executable, str(REPO / "tools" / "gen_caffe_pb2.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_field_numbers_of_bvlc_caffe():
    # a few numbers that files in the wild depend on (BVLC Caffe 1.0's caffe.proto)
    f = lambda msg, name: msg.DESCRIPTOR.fields_by_name[name].number
    assert f(caffe_pb2.NetParameter, "layer") == 100 and f(caffe_pb2.NetParameter, "layers") == 2
    assert f(caffe_pb2.LayerParameter, "convolution_param") == 106
    assert f(caffe_pb2.LayerParameter, "batch_norm_param") == 139
    assert f(caffe_pb2.LayerParameter, "python_param") == 130
    assert f(caffe_pb2.ConvolutionParameter, "dilation") == 18
    assert f(caffe_pb2.SolverParameter, "momentum2") == 39 and f(caffe_pb2.SolverParameter, "type") == 40
    assert f(caffe_pb2.SolverState, "current_step") == 4
    assert f(caffe_pb2.Datum, "encoded") == 7
    assert f(caffe_pb2.V1LayerParameter, "blobs_lr") == 7
    assert caffe_pb2.V1LayerParameter.LayerType.Value("DECONVOLUTION") == 39
