"""cic.metrics: the AuC of the cumulative ab-error curve (thresholds 0..150, error <= t, mean over the 151
thresholds), raw and class-rebalanced, per image and over a dataset."""
import numpy as np
import pytest
import torch

import cic
from cic_helpers import real_ab

T = np.arange(151)


def ab_with_errors(errors, seed=0):
    """gt at random integer ab, pred displaced along a or b by exactly the given errors: (1, 2, 1, n) each."""
    rng = np.random.default_rng(seed)
    n = len(errors)
    gt = rng.integers(-60, 60, size=(1, 2, 1, n)).astype(np.float64)
    pred = gt.copy()
    for i, e in enumerate(errors):
        pred[0, i % 2, 0, i] += e if rng.random() < 0.5 else -e
    return pred, gt


def brute_force_classes(gt):
    c = cic.load_bins().astype(np.float64)
    pts = gt.reshape(gt.shape[0], 2, -1).transpose(0, 2, 1)
    return ((pts[:, :, None, :] - c) ** 2).sum(-1).argmin(-1)                 # (N, P)


def test_ground_truth_scores_one():
    gt = real_ab(3, 20)
    assert np.array_equal(cic.auc(gt, gt), np.ones(3))
    assert np.array_equal(cic.rebalanced_auc(gt, gt), np.ones(3))
    assert np.array_equal(cic.auc_curve(gt, gt), np.ones((3, 151)))  # including t = 0 (error <= t)


def test_hand_computed_case():
    pred, gt = ab_with_errors([0.0, 10.0, 100.0, 200.0])
    # t = 0..9: 1/4; t = 10..99: 2/4; t = 100..150: 3/4  (error exactly t counts)
    expect = (10 * 0.25 + 90 * 0.5 + 51 * 0.75) / 151
    assert np.isclose(cic.auc(pred, gt)[0], expect, atol=1e-12)
    curve = cic.auc_curve(pred, gt)[0]
    assert curve[9] == 0.25 and curve[10] == 0.5 and curve[100] == 0.75 and curve[150] == 0.75


def test_threshold_is_inclusive_and_far_errors_score_zero():
    pred, gt = ab_with_errors([0.5, 1.0, 1.5])
    curve = cic.auc_curve(pred, gt)[0]
    assert curve[0] == 0 and np.isclose(curve[1], 2 / 3) and curve[2] == 1
    pred, gt = ab_with_errors([151.0, 300.0])
    assert cic.auc(pred, gt)[0] == 0


def test_custom_thresholds():
    pred, gt = ab_with_errors([0.0, 10.0, 100.0, 200.0])
    assert np.allclose(cic.auc_curve(pred, gt, thresholds=[5, 50, 250])[0], [0.25, 0.5, 1.0])


def test_rebalanced_equals_mean_over_classes():
    gt = real_ab(2, 24, seed=1)
    pred = gt + np.random.default_rng(2).normal(scale=15, size=gt.shape).astype(np.float32)
    err = np.linalg.norm(pred.astype(np.float64) - gt, axis=1).reshape(2, -1)
    cls = brute_force_classes(gt)
    for i in range(2):
        per_class = [(err[i][cls[i] == q][:, None] <= T).mean(0) for q in np.unique(cls[i])]
        ref = np.mean(per_class, axis=0).mean()
        assert np.isclose(cic.rebalanced_auc(pred[i:i + 1], gt[i:i + 1])[0], ref, atol=1e-12)
        # same thing, written as pixel weights 1 / p(gt bin) with p the image's own bin distribution
        p = np.bincount(cls[i], minlength=313) / cls[i].size
        assert np.isclose(cic.rebalanced_auc(pred[i:i + 1], gt[i:i + 1], prior=p)[0], ref, atol=1e-12)
        raw = (err[i][:, None] <= T).mean(0).mean()
        assert np.isclose(cic.auc(pred[i:i + 1], gt[i:i + 1])[0], raw, atol=1e-12)
        assert not np.isclose(raw, ref)  # rebalancing changes the number on a real image


def test_rebalanced_with_a_training_prior():
    gt = real_ab(1, 16, seed=3)
    pred = np.zeros_like(gt)
    prior = np.random.default_rng(4).random(313) + 0.01
    prior /= prior.sum()
    err = np.linalg.norm(gt.astype(np.float64), axis=1).reshape(-1)
    w = 1.0 / prior[brute_force_classes(gt)[0]]
    ref = ((err[:, None] <= T) * w[:, None]).sum(0) / w.sum()
    assert np.isclose(cic.rebalanced_auc(pred, gt, prior=prior)[0], ref.mean(), atol=1e-12)
    bad = prior.copy()
    bad[brute_force_classes(gt)[0][0]] = 0
    with pytest.raises(ValueError):
        cic.rebalanced_auc(pred, gt, prior=bad)


def test_meter_aggregates_a_dataset():
    gt = torch.from_numpy(real_ab(5, 16, seed=5))
    pred = gt + torch.randn(gt.shape, generator=torch.Generator().manual_seed(0)) * 20
    meter = cic.AucMeter()
    meter.update(pred[:2], gt[:2])
    meter.update(pred[2:].numpy(), gt[2:].numpy())
    # pooled over all pixels == one big "image" holding all of them
    big_p = pred.permute(1, 0, 2, 3).reshape(1, 2, -1)
    big_g = gt.permute(1, 0, 2, 3).reshape(1, 2, -1)
    assert np.isclose(meter.auc(), float(cic.auc(big_p, big_g)[0]), atol=1e-12)
    assert np.isclose(meter.rebalanced_auc(), float(cic.rebalanced_auc(big_p, big_g)[0]), atol=1e-12)
    # images of one size: pooled raw AuC == mean of per-image AuCs
    assert torch.allclose(meter.per_image_auc, cic.auc(pred, gt))
    assert torch.allclose(meter.per_image_rebalanced_auc, cic.rebalanced_auc(pred, gt))
    assert np.isclose(meter.auc(), float(meter.per_image_auc.mean()), atol=1e-12)
    assert meter.curve().shape == (151,) and meter.rebalanced_curve().shape == (151,)
    with pytest.raises(ValueError):
        cic.AucMeter().auc()


def test_ab_error():
    pred, gt = ab_with_errors([3.0, 4.0])
    assert np.allclose(cic.ab_error(pred, gt), [[[3.0, 4.0]]])
    with pytest.raises(ValueError):
        cic.ab_error(pred, gt[..., :1])
