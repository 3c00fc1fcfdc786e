"""The built-in layer types.  Importing this package registers every one of them."""
from . import data  # noqa: F401
from .. import python_layer  # noqa: F401
from . import input, loss, neuron, norm, shape, vision  # noqa: F401
from . import hdf5_output, image_data, memory_data, recurrent  # noqa: F401
