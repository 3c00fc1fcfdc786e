"""Packaging for the Colorful Image Colorization reproduction toolkit.

Installs three Python packages:

* ``torchcaffe`` -- a Caffe-compatible runtime on PyTorch (``import torchcaffe as caffe``),
  with the console command ``caffe``;
* ``cic`` -- the colorization method (colour conversion, bins, encoding, rebalancing, metrics);
* ``layers`` -- the Caffe Python layers that the prototxt files name (``colorization_layers``).
"""
from setuptools import setup

setup(
    name="colorization-toolkit",
    version="0.1.0",
    description="Caffe-faithful reproduction of Colorful Image Colorization (Zhang, Isola, Efros, ECCV 2016)",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["torchcaffe", "torchcaffe.proto", "torchcaffe.builtin", "cic", "layers", "colorization"],
    package_data={"torchcaffe.proto": ["caffe.proto"]},
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
        "pydot>=1.4",  # caffe.draw / tools/draw_net.py (rendering also needs graphviz's dot program)
    ],
    # scikit-learn: the released soft-encoding (ball tree) that tools/bench_soft_encoding.py compares with;
    # grpcio-tools: its protoc checks that the committed caffe_pb2.py is caffe.proto's
    extras_require={"test": ["pytest>=7", "scikit-learn>=1.2", "grpcio-tools>=1.60", "selenium>=4.10"]},
    entry_points={"console_scripts": ["caffe=torchcaffe.cli:main"]},
)
