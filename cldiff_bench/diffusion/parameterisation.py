"""What a network's output means: epsilon (the noise), v (Salimans & Ho, 2022) or x0 (the clean image).

With x_t = alpha x0 + sigma eps, alpha = sqrt(alpha_bar) and sigma = sqrt(1 - alpha_bar):

    v = alpha eps - sigma x0,   x0 = alpha x_t - sigma v,   eps = sigma x_t + alpha v.

The prediction type is a property of a model (`UNetConfig.prediction`); the samplers turn any output into (x0, eps)
here and the training losses ask here for the target of a model's type, so nothing else branches on it.

Our schedule has zero terminal SNR (alpha = 0 at t = T - 1): an epsilon model cannot say what x0 is there (its x0
divides by alpha; the study divides by sqrt(alpha_bar + 1e-8) instead), a v or x0 model can.
"""
from __future__ import annotations

import torch

PREDICTIONS = ("epsilon", "v", "x0")
# The study's x0 denominator for epsilon models, sqrt(alpha_bar + 1e-8) (see ddim.py).
X0_DENOMINATOR_EPSILON = 1e-8


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction type must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
    return prediction


def x0_and_eps(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction: str,
               x0_epsilon: float = X0_DENOMINATOR_EPSILON) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) that `output` of a `prediction` model means at x_t; `alpha_bar` broadcasts against x_t.

    For epsilon this is exactly the DDIM sampler's arithmetic (the parity tests pin it), x0's denominator
    sqrt(alpha_bar + x0_epsilon)."""
    if prediction == "epsilon":
        x0 = (x_t - (1 - alpha_bar).sqrt() * output) / (alpha_bar + x0_epsilon).sqrt()
        return x0, output
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction == "v":
        return alpha * x_t - sigma * output, sigma * x_t + alpha * output
    if prediction == "x0":
        # sigma > 0 at every t a network is called at (alpha_bar < 1 from t = 0 on).
        return output, (x_t - alpha * output) / sigma
    raise ValueError(f"unknown prediction type {prediction!r}")


def output_for(prediction: str, x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """What a `prediction` model should output for (x0, eps) at alpha_bar: its regression target."""
    if prediction == "epsilon":
        return eps
    if prediction == "v":
        return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    if prediction == "x0":
        return x0
    raise ValueError(f"unknown prediction type {prediction!r}")


def convert(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, source: str, target: str,
            x0_epsilon: float = X0_DENOMINATOR_EPSILON) -> torch.Tensor:
    """A `source` model's output as a `target` model would say it (the output itself when the types agree)."""
    if source == target:
        return output
    return output_for(target, *x0_and_eps(output, x_t, alpha_bar, source, x0_epsilon), alpha_bar)


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample (N,) tensor shaped to broadcast against images `like` (N, C, H, W); a scalar as it is."""
    return values if values.dim() == 0 else values.view((-1,) + (1,) * (like.dim() - 1))
