"""A third-party-style sampler: DDIM at eta = 1 whatever eta it is asked for, DDPM's ancestral sampling on DDIM's
few-step grid (not part of the suite). It counts the images it draws, so a test can see it was the one that drew
them.

Registered in tests with `--plugin tests.plugins.ancestral_sampler_plugin`, exactly as a user's module would be; a
run draws its metric samples with it through the evaluation setting `sampler`, `score` with `--sampler ancestral`.
"""
from cldiff_bench.diffusion.ddim import DDIMSampler
from cldiff_bench.diffusion.samplers import SamplerSpec
from cldiff_bench.registry import hookimpl

DRAWN = [0]  # images drawn with it so far


class AncestralDDIM(DDIMSampler):
    def __init__(self, schedule, steps, eta=0.0):
        super().__init__(schedule, steps, eta=1.0)

    @property
    def settings(self):
        return {**super().settings, "sampler": "ancestral"}

    def sample(self, model, seeds, image_shape, **kwargs):
        DRAWN[0] += len(seeds)
        return super().sample(model, seeds, image_shape, **kwargs)


@hookimpl
def cldiff_bench_samplers():
    return [SamplerSpec("ancestral", "DDIM at eta = 1: DDPM's ancestral steps on DDIM's grid (test plugin)",
                        AncestralDDIM)]
