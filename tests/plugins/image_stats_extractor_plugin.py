"""A third-party-style FID feature extractor: per-channel means and the image downsampled to 4x4 (not part of the
suite; a crude feature space, but one FID can be computed in).

Registered in tests with `--plugin tests.plugins.image_stats_extractor_plugin`, exactly as a user's module would be.
"""
import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from cldiff_bench.registry import ExtractorSpec, hookimpl

GRID = 4


class ImageStatsFeatureExtractor(FeatureExtractorBase):
    """uint8 RGB N x 3 x H x W -> [mean of R, G, B; the 3 x 4 x 4 average-pooled image], all in [0, 1]."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)

    @staticmethod
    def get_provided_features_list():
        return ("stats",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "stats"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        x = x.to(torch.float32) / 255
        means = x.mean(dim=(2, 3))
        grid = F.adaptive_avg_pool2d(x, GRID).flatten(1)
        return (torch.cat([means, grid], 1),)


def build(classifier, device, settings):
    return ImageStatsFeatureExtractor("image-stats", ["stats"]).to(device), "stats"


def identity(settings, classifier_info):
    return f"image-stats:grid{GRID}:v1"  # no weights: the code's version is all the statistics depend on


def describe(settings):
    return {"image_stats": {"grid": GRID, "dimensions": 3 + 3 * GRID * GRID}}


IMAGE_STATS = ExtractorSpec("image-stats", "per-channel means and a 4x4 downsampled image (test plugin)",
                            build, identity, describe)


@hookimpl
def cldiff_bench_extractors():
    return [IMAGE_STATS]
