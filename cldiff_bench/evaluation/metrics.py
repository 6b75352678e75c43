"""The numbers reported after every task: FID (computed by torch-fidelity), and the class-distribution scores.

KLD and ARD compare the class histogram of the seen test set (p_true) with the histogram of the generated samples
as labelled by the evaluation classifier (p_gen), over all classes of the stream, so a model that generates
classes it has not seen yet (or none of a seen class) is penalised.
"""
from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

KLD_EPSILON = 1e-8


def class_histogram(labels, num_classes: int) -> np.ndarray:
    """Relative frequency of each of `num_classes` classes in `labels` (float64, sums to 1; all zeros if empty)."""
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    labels = labels.astype(np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels outside [0, {num_classes})")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def kl_divergence(p_true, p_gen, eps: float = KLD_EPSILON) -> float:
    """KL(p_true || p_gen) in nats, with the study's smoothing.

    Exactly: p = (p_true + eps) / sum(p_true + eps), q = (p_gen + eps) / sum(p_gen + eps), KLD = sum p log(p / q).
    Adding eps to both keeps a class the generator never produces finite (about p log(p / eps)), and classes not
    seen yet (p_true = 0) contribute only ~eps log(eps / q) instead of being dropped; renormalising afterwards
    keeps both arguments distributions, so KLD >= 0 and is exactly 0 for equal histograms.
    """
    p = np.asarray(p_true, dtype=np.float64) + eps
    q = np.asarray(p_gen, dtype=np.float64) + eps
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    p /= p.sum()
    q /= q.sum()
    return float(np.sum(p * np.log(p / q)))


def total_variation(p_true, p_gen) -> float:
    """ARD: total variation distance 0.5 * sum |p - q| of the unsmoothed histograms (in [0, 1])."""
    p = np.asarray(p_true, dtype=np.float64)
    q = np.asarray(p_gen, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    return float(0.5 * np.abs(p - q).sum())


def fid_statistics(features: torch.Tensor) -> dict:
    """(mu, sigma) of a feature matrix, by torch-fidelity, in float64 so cached and fresh statistics agree."""
    if features.dim() != 2 or len(features) < 2:
        raise ValueError(f"need a (N >= 2, D) feature matrix, got {tuple(features.shape)}")
    return fid_features_to_statistics(features.detach().cpu().to(torch.float64))


def fid_from_statistics(stats_1: dict, stats_2: dict) -> float:
    """The Frechet distance between two (mu, sigma) pairs, by torch-fidelity's own formula."""
    s1 = {k: np.asarray(stats_1[k], dtype=np.float64) for k in ("mu", "sigma")}
    s2 = {k: np.asarray(stats_2[k], dtype=np.float64) for k in ("mu", "sigma")}
    return float(fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID])


def fid_from_features(features_1: torch.Tensor, features_2: torch.Tensor) -> float:
    return fid_from_statistics(fid_statistics(features_1), fid_statistics(features_2))
