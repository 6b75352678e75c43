"""FID (through torch-fidelity), class-histogram scores and the solver's KD loss, on hand-checkable inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from cldiff_bench.errors import UserError
from cldiff_bench.evaluation import (class_histogram, fid_from_features, kd_loss, kl_divergence,
                                     total_variation)
from cldiff_bench.evaluation.networks import build_network
from cldiff_bench.evaluation import build_extractor
from cldiff_bench.evaluation.features import extract_features
from cldiff_bench.registry import load_registry


def scipy_frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def smooth_images(n: int, seed: int, channels: int = 3) -> torch.Tensor:
    """Blurred noise with a per-image colour and contrast, so even an untrained conv net's pooled features vary
    across images (plain noise averages out to nearly the same feature vector)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.randn(n, channels, 40, 40, generator=g), 9, stride=1)
    x = x / x.std() * torch.rand(n, 1, 1, 1, generator=g) * 80
    x = x + torch.rand(n, channels, 1, 1, generator=g) * 160 + 48
    return x.clamp(0, 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def classifier_extractor():
    # Any network with features and a head will do: these tests check the FID arithmetic, not the ruler.
    model = build_network("small-cnn", 5, init_seed=123)
    return build_extractor("classifier", model, torch.device("cpu"), load_registry().extractors())


def test_class_histogram_counts_all_classes_including_unseen():
    h = class_histogram(torch.tensor([0, 0, 1, 3]), 5)
    np.testing.assert_allclose(h, [0.5, 0.25, 0.0, 0.25, 0.0])
    assert class_histogram([], 3).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        class_histogram([0, 5], 5)


def test_kld_and_ard_hand_computed_with_unseen_and_empty_classes():
    # Classes 0-1 seen (uniform); 2-3 not seen yet. The generator never produces class 1 but produces class 2.
    p_true = np.array([0.5, 0.5, 0.0, 0.0])
    p_gen = np.array([0.75, 0.0, 0.25, 0.0])
    eps = 1e-8
    p = (p_true + eps) / (1 + 4 * eps)
    q = (p_gen + eps) / (1 + 4 * eps)
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert kl_divergence(p_true, p_gen) == pytest.approx(expected, rel=1e-12)
    # Dominated by the empty seen class: 0.5 log(0.5 / 1e-8) ~ 8.86 nats.
    assert 8.0 < kl_divergence(p_true, p_gen) < 9.5
    assert total_variation(p_true, p_gen) == pytest.approx(0.5 * (0.25 + 0.5 + 0.25 + 0.0))
    assert kl_divergence(p_true, p_true) == pytest.approx(0.0, abs=1e-15)
    assert total_variation(p_true, p_true) == 0.0
    # Mass on an unseen class: its KLD term is eps-sized (eps log(eps / 0.1) ~ -2e-7), so KLD sees only the
    # shortfall on class 1, while ARD counts the unseen-class mass too.
    p_gen2 = np.array([0.5, 0.4, 0.1, 0.0])
    assert kl_divergence(p_true, p_gen2) == pytest.approx(0.5 * math.log(0.5 / 0.4), abs=1e-6)
    assert total_variation(p_true, p_gen2) == pytest.approx(0.1)


def test_fid_of_a_set_against_itself_is_zero(classifier_extractor):
    ext, feature = classifier_extractor
    feats = extract_features(ext, smooth_images(300, 0), 100, torch.device("cpu"))[feature]
    assert feats.shape == (300, 128)
    assert abs(fid_from_features(feats, feats)) < 1e-6


def test_fid_matches_a_direct_scipy_frechet_distance(classifier_extractor):
    ext, feature = classifier_extractor
    a = extract_features(ext, smooth_images(400, 1), 128, torch.device("cpu"))[feature]
    b = extract_features(ext, smooth_images(400, 2).flip(-1) // 2 + 40, 128, torch.device("cpu"))[feature]
    # Only on dimensions with variance in both sets: sqrtm of a rank-deficient product is ill-conditioned.
    keep = (a.std(0) > 1e-4) & (b.std(0) > 1e-4)
    assert keep.sum() > 20
    a, b = a[:, keep], b[:, keep]
    suite = fid_from_features(a, b)
    direct = scipy_frechet(a.double().numpy(), b.double().numpy())
    # An untrained network's features are small (~0.02), hence a small FID; the comparison is relative.
    assert suite > 1e-4
    assert suite == pytest.approx(direct, rel=1e-6)


def test_fid_grows_with_added_noise(classifier_extractor):
    ext, feature = classifier_extractor
    cpu = torch.device("cpu")
    real = smooth_images(300, 3)
    real_feats = extract_features(ext, real, 150, cpu)[feature]
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(real.shape, generator=g)
    fids = []
    for sigma in (0.0, 10.0, 30.0, 80.0):
        noisy = (real.float() + sigma * noise).clamp(0, 255).round().to(torch.uint8)
        fids.append(fid_from_features(extract_features(ext, noisy, 150, cpu)[feature], real_feats))
    assert fids[0] == pytest.approx(0.0, abs=1e-6)
    assert all(x < y for x, y in zip(fids, fids[1:])), fids


def test_unknown_extractor_is_a_user_error():
    with pytest.raises(UserError, match="unknown FID feature extractor 'inceptoin'.*inception"):
        build_extractor("inceptoin", None, torch.device("cpu"), load_registry().extractors())


def test_kd_loss_directions_on_hand_made_logits():
    student = torch.tensor([[4.0, 0.0, -4.0], [0.0, 1.0, 0.0]])
    teacher = torch.tensor([[0.0, 6.0, 0.0], [1.0, 1.0, 3.0]])
    t = 2.0

    def softmax(v):
        e = np.exp(np.asarray(v) / t)
        return e / e.sum()

    standard, reversed_ = [], []
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        ps, pt = softmax(s_row), softmax(t_row)
        standard.append(-(pt * np.log(ps)).sum())
        reversed_.append(-(ps * np.log(pt)).sum())
    got_std = kd_loss(student, teacher, t, "standard", scale_t2=False).item()
    got_rev = kd_loss(student, teacher, t, "original-reversed", scale_t2=False).item()
    assert got_std == pytest.approx(np.mean(standard), rel=1e-6)
    assert got_rev == pytest.approx(np.mean(reversed_), rel=1e-6)
    assert abs(got_std - got_rev) > 0.05  # the two directions really differ on these logits
    assert kd_loss(student, teacher, t, "standard").item() == pytest.approx(t * t * np.mean(standard), rel=1e-6)
    # Gradients: standard pulls the student towards the teacher's soft labels (zero gradient when equal).
    s = teacher.clone().requires_grad_(True)
    kd_loss(s, teacher, t, "standard").backward()
    assert s.grad.abs().max().item() < 1e-6
    # The teacher never receives gradients.
    ss, tt = student.clone().requires_grad_(True), teacher.clone().requires_grad_(True)
    kd_loss(ss, tt, t, "original-reversed").backward()
    assert tt.grad is None and ss.grad.abs().max().item() > 1e-3
    with pytest.raises(UserError):
        kd_loss(student, teacher, t, "backwards")


def test_feature_pass_runs_without_tf32_and_restores_the_setting(classifier_extractor):
    """TF32 (cuDNN's default on recent GPUs) would shift FID; the feature pass turns it off, and back after."""
    from cldiff_bench.evaluation.features import full_float32
    ext, _ = classifier_extractor
    seen = []
    handle = ext.model.body.register_forward_hook(
        lambda *args: seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)))
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        extract_features(ext, smooth_images(8, 5), 4, torch.device("cpu"))
        assert seen and all(flags == (False, False) for flags in seen)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
        with full_float32():
            assert not torch.backends.cudnn.allow_tf32
    finally:
        handle.remove()
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
