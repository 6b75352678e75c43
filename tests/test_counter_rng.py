"""Per-sample noise from the counter-based generator: the bits are SplitMix64's, each row depends on its seed alone,
the numbers do not depend on how the work is split, and they are normal."""
import math

import pytest
import torch

from cldiff_bench.diffusion import counter_rng
from cldiff_bench.diffusion.seeding import per_sample_normal

MASK = (1 << 64) - 1
SHAPE = (2, 1, 8, 8)


def splitmix64_mix(z: int) -> int:
    """The reference finaliser in Python's unbounded integers, reduced mod 2^64 by hand."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_int64_arithmetic_gives_splitmix64s_bits():
    values = [0, 1, 2, 12345, (1 << 63) - 1, 1 << 63, MASK]
    got = counter_rng.mix64(torch.tensor([counter_rng.as_int64(v) for v in values]))
    assert [g & MASK for g in got.tolist()] == [splitmix64_mix(v) for v in values]
    # Uniform j of a row: the top 53 bits of mix(mix(seed) + (j + 1) * golden), centred in their interval.
    seed = (1 << 63) + 7
    u = counter_rng.uniform(torch.tensor([counter_rng.as_int64(seed)]), 3)[0].tolist()
    key = splitmix64_mix(seed)
    expected = [((splitmix64_mix((key + (j + 1) * 0x9E3779B97F4A7C15) & MASK) >> 11) + 0.5) * 2.0**-53
                for j in range(3)]
    assert u == expected


def test_series_match_the_library_functions():
    u = counter_rng.uniform(torch.arange(20, dtype=torch.int64), 5000).flatten()
    u = torch.cat([u, torch.tensor([2.0**-53, 0.25, 0.5, 0.75, 1.0 - 2.0**-53], dtype=torch.float64)])
    assert ((counter_rng.log(u) - u.log()).abs() / u.log().abs()).max() < 2e-15
    cos, sin = counter_rng.cos_sin_of_turns(u)
    assert (cos - (2 * math.pi * u).cos()).abs().max() < 2e-15
    assert (sin - (2 * math.pi * u).sin()).abs().max() < 2e-15


def test_a_row_depends_on_its_seed_alone():
    seeds = [5, 2**62 + 1, 0, 77, 5]
    batch = per_sample_normal(seeds, SHAPE)
    assert batch.shape == (5, *SHAPE) and batch.dtype == torch.float32
    for i, seed in enumerate(seeds):
        assert torch.equal(batch[i], per_sample_normal([seed], SHAPE)[0])  # any batch size, any position
    assert torch.equal(batch, per_sample_normal(seeds, SHAPE))  # and again
    assert torch.equal(batch[0], batch[4]) and not torch.equal(batch[0], batch[3])
    # A shape with more elements starts with the same numbers: the initial noise of a stochastic sampler's draw
    # (1 + steps images per seed) is the deterministic sampler's.
    longer = per_sample_normal(seeds, (5, 1, 8, 8))
    assert torch.equal(longer[:, :2], batch)
    assert per_sample_normal([], SHAPE).shape == (0, *SHAPE)


def test_the_numbers_do_not_depend_on_the_thread_count():
    """A CPU splits large element-wise operations between threads, into vector loops and scalar tails: the
    series use only exactly rounded operations, so every split computes the same bits."""
    seeds = list(range(300))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = per_sample_normal(seeds, (1, 33, 17), dtype=torch.float64)
        torch.set_num_threads(2)
        two = per_sample_normal(seeds, (1, 33, 17), dtype=torch.float64)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_seeds_outside_64_bits_are_refused():
    with pytest.raises(ValueError, match="2\\^64"):
        per_sample_normal([-1], SHAPE)
    with pytest.raises(ValueError, match="2\\^64"):
        per_sample_normal([1 << 64], SHAPE)


def test_the_draws_are_standard_normal_and_uncorrelated():
    """200k draws: 200 consecutive seeds, 1000 numbers each."""
    z = per_sample_normal(list(range(200)), (1000,), dtype=torch.float64)
    flat = z.flatten()
    n = flat.numel()
    assert abs(flat.mean()) < 4 / math.sqrt(n)
    assert abs(flat.std() - 1) < 4 / math.sqrt(2 * n)
    assert abs((flat.abs() > 3).double().mean() - 0.0026998) < 0.0006  # the tails

    def correlation(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    bound = 4 / math.sqrt(n / 2)
    assert abs(correlation(z[:, 0::2], z[:, 1::2])) < bound   # the two halves of each Box-Muller pair
    assert abs(correlation(z[:, 1:-1:2], z[:, 2::2])) < bound  # neighbours from consecutive pairs
    assert abs(correlation(z[:-1], z[1:])) < 4 / math.sqrt(n)  # neighbouring seeds, element by element
    assert abs(correlation(z[:, :-1] ** 2, z[:, 1:] ** 2)) < 4 / math.sqrt(n)  # nor in their magnitudes
    # Kolmogorov-Smirnov against the normal CDF: D below the 0.1% critical value 1.95 / sqrt(n).
    ordered = flat.sort().values
    cdf = torch.special.ndtr(ordered)
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    d = torch.maximum(ranks / n - cdf, cdf - (ranks - 1) / n).max()
    assert d < 1.95 / math.sqrt(n)
