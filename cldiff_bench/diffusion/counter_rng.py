"""Counter-based normal draws: element j of a stream is a function of (key, j) alone, computed with tensor ops.

No generator holds state, so any number of streams is drawn in one vectorised call on any device, and the same
(key, j) gives the same number everywhere. The bits are SplitMix64 (Steele, Lea and Flood, 2014) over a Weyl
sequence, in int64 arithmetic: torch has no uint64 arithmetic, but int64 addition and multiplication wrap around
mod 2^64 exactly as uint64's do, and the logical shift is an arithmetic shift with the sign bits masked off.

The normals are Box-Muller's, in float64 from additions, multiplications, divisions and square roots only (the
logarithm, sine and cosine as series below): IEEE 754 rounds each of those exactly, the same in a CPU's vector and
scalar loops and on a GPU, whereas library log/sin/cos differ between them in the last bit.
"""
from __future__ import annotations

import math

import torch


def _signed(value: int) -> int:
    """The int64 with the same 64 bits as the uint64 `value`."""
    return value - (1 << 64) if value >= 1 << 63 else value


GOLDEN = _signed(0x9E3779B97F4A7C15)  # SplitMix64's Weyl increment (2^64 / golden ratio, odd)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)
_LN2 = math.log(2.0)
_SQRT_HALF = math.sqrt(0.5)
_HALF_PI = math.pi / 2
# log(m) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), s = (m - 1) / (m + 1), |s| <= 0.172: the first term left
# out is below 1e-17.
_ATANH = [1.0 / (2 * k + 1) for k in range(10)]
# sin x on |x| <= pi/4 by its Taylor series to x^15 (the first term left out is below 5e-17).
_SIN = [(-1) ** k / math.factorial(2 * k + 1) for k in range(8)]
# cos and sin of q pi/2 for q = 0, 1, 2, 3 (mod 4): exact, so the rotation by them below is exact too.
_QUARTER_COS = (1.0, 0.0, -1.0, 0.0)
_QUARTER_SIN = (0.0, 1.0, 0.0, -1.0)


def as_int64(seed: int) -> int:
    seed = int(seed)
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"a seed must be a whole number in [0, 2^64), got {seed}")
    return _signed(seed)


def shift_right(x: torch.Tensor, k: int) -> torch.Tensor:
    """uint64's logical shift of the int64 bits x (int64's >> copies the sign bit in)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser: a bijection of 64-bit values in which each input bit flips about half the output bits."""
    z = (z ^ shift_right(z, 30)) * _MIX1
    z = (z ^ shift_right(z, 27)) * _MIX2
    return z ^ shift_right(z, 31)


def uniform(keys: torch.Tensor, count: int) -> torch.Tensor:
    """(len(keys), count) float64 uniforms in (0, 1), never 0 or 1: element j of row i from (keys[i], j) alone."""
    counters = torch.arange(1, count + 1, dtype=torch.int64, device=keys.device)
    bits = mix64(mix64(keys)[:, None] + counters[None, :] * GOLDEN)
    return (shift_right(bits, 11).double() + 0.5) * 2.0**-53  # the top 53 bits, centred in their interval


def _horner(z: torch.Tensor, coefficients: list[float]) -> torch.Tensor:
    out = torch.full_like(z, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * z + c  # two ops, each rounded (no fused multiply-add, which a CPU's scalar loop would lack)
    return out


def log(u: torch.Tensor) -> torch.Tensor:
    """Natural logarithm of positive float64 values, to about 1e-16 relative."""
    m, e = torch.frexp(u)  # u = m 2^e, m in [0.5, 1)
    low = m < _SQRT_HALF
    m = torch.where(low, m * 2.0, m)  # now in [sqrt(1/2), sqrt(2))
    e = (e - low.to(e.dtype)).double()
    s = (m - 1.0) / (m + 1.0)
    return e * _LN2 + 2.0 * s * _horner(s * s, _ATANH)


def cos_sin_of_turns(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angle 2 pi u for float64 u in [0, 1], to about 1e-16."""
    quarters = 4.0 * u.contiguous()  # exact
    q = torch.round(quarters)
    x = (quarters - q) * _HALF_PI  # the angle from the nearest multiple of pi/2, in [-pi/4, pi/4]
    s = x * _horner(x * x, _SIN)
    c = (1.0 - s * s).sqrt()  # cos x >= 0.7 here, so this loses nothing
    quadrant = q.to(torch.int64) & 3
    cq = torch.tensor(_QUARTER_COS, dtype=u.dtype, device=u.device)[quadrant]
    sq = torch.tensor(_QUARTER_SIN, dtype=u.dtype, device=u.device)[quadrant]
    return cq * c - sq * s, sq * c + cq * s  # cos and sin of q pi/2 + x


def normal(keys: torch.Tensor, count: int) -> torch.Tensor:
    """(len(keys), count) float64 standard normals: element j of row i from (keys[i], j) alone (Box-Muller on the
    uniforms 2p and 2p + 1 gives elements 2p and 2p + 1), so a shorter draw is a prefix of a longer one."""
    pairs = (count + 1) // 2
    u = uniform(keys, 2 * pairs).view(len(keys), pairs, 2)
    radius = (-2.0 * log(u[..., 0])).sqrt()
    cos, sin = cos_sin_of_turns(u[..., 1])
    return torch.stack([radius * cos, radius * sin], dim=-1).view(len(keys), 2 * pairs)[:, :count]
