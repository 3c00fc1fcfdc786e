"""``caffe.pycaffe``: the names BVLC's pycaffe module defines (Net, the solvers, the blob vector types),
taken from torchcaffe."""
from torchcaffe import (Net, SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,  # noqa: F401
                        AdaDeltaSolver, AdamSolver)
from torchcaffe.blob import Blob  # noqa: F401
from torchcaffe.python_layer import Layer  # noqa: F401
