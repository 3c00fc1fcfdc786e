"""The colorization application: the colorizer, evaluation, the seed's VGG analysis, reports and the
Turing-test app, over the runtime (``torchcaffe``) and the method (``cic``)."""
