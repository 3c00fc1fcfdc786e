"""cic -- the method of "Colorful Image Colorization" (Zhang, Isola, Efros, ECCV 2016), on torch.

Independent of Caffe (never imports torchcaffe). Every function works on torch tensors on any device;
functions that users call on arrays also accept numpy and then return numpy (see ``cic._interop``).

Modules (one place for each thing):

* :mod:`cic.color`   sRGB <-> CIE Lab (D65), from RGB floats or Caffe's BGR 0..255
* :mod:`cic.bins`    the 313 released ab bins (``data/pts_in_hull.npy``) and the in-gamut rule for other grids
* :mod:`cic.encode`  exact k-nearest bins and Gaussian soft-encoding (paper: k = 5, sigma = 5)
* :mod:`cic.gray`    the grayscale test (no |a| or |b| above 5)
* :mod:`cic.prior`   empirical prior, its smoothing (sigma = 5), rebalancing weights (lambda = 1/2)
* :mod:`cic.decode`  annealed mean (T = 0.38), mode, mean; bilinear upsampling; L + ab -> RGB
* :mod:`cic.metrics` AuC of the cumulative ab-error curve (0..150), raw and class-rebalanced
* :mod:`cic.paths`   the toolkit's data/ directory
"""
from ._interop import to_numpy, to_tensor
from .bins import GRID, PTS_IN_HULL, Q, as_centers, bin_centers, gamut_bins, grid_spacing, load_bins
from .color import bgr255_to_lab, fit_to_gamut, lab2rgb, lab_to_rgb, rgb2lab, rgb_to_lab
from .decode import DEFAULT_T, annealed_mean, colorize, decode_mean, decode_mode, upsample_bilinear
from .encode import DEFAULT_K, DEFAULT_SIGMA, knn_bins, nearest_bin, soft_encode
from .gray import GRAY_THRESHOLD, is_gray, is_gray_image, nongray_mask
from .metrics import AucMeter, ab_error, auc, auc_curve, class_hits, rebalanced_auc
from .paths import DATA_DIR, resolve_data_path
from .prior import (LAMBDA, PRIOR_PROBS, PRIOR_SIGMA, PriorAccumulator, bin_counts, load_prior, prior_boost,
                    rebalance_weights, save_prior, smooth_prior)

__all__ = [
    "GRID", "PTS_IN_HULL", "Q", "as_centers", "bin_centers", "gamut_bins", "grid_spacing", "load_bins",
    "bgr255_to_lab", "fit_to_gamut", "lab2rgb", "lab_to_rgb", "rgb2lab", "rgb_to_lab",
    "DEFAULT_T", "annealed_mean", "colorize", "decode_mean", "decode_mode", "upsample_bilinear",
    "DEFAULT_K", "DEFAULT_SIGMA", "knn_bins", "nearest_bin", "soft_encode",
    "GRAY_THRESHOLD", "is_gray", "is_gray_image", "nongray_mask",
    "AucMeter", "ab_error", "auc", "auc_curve", "class_hits", "rebalanced_auc",
    "DATA_DIR", "resolve_data_path", "to_numpy", "to_tensor",
    "LAMBDA", "PRIOR_PROBS", "PRIOR_SIGMA", "PriorAccumulator", "bin_counts", "load_prior", "prior_boost",
    "rebalance_weights", "save_prior", "smooth_prior",
]
