"""Our U-Net against diffusers' UNet2DModel configured as the study configured it, and the importer between them."""
import json
import shutil
import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from cldiff_bench.diffusion import MODEL_PRESETS, UNet, count_parameters, model_config  # noqa: E402
from cldiff_bench.diffusion.diffusers_import import (  # noqa: E402
    convert_state_dict, import_diffusers_unet, load_diffusers_unet, load_model_file, unet_config_from_diffusers)
from cldiff_bench.errors import UserError  # noqa: E402

# The study's networks as its train_cl.py builds them: from configs/model/ddim_medium.json (Fashion-MNIST) and
# configs/model/ddim_medium_3ch.json (CIFAR-10) it passes only these fields to UNet2DModel, so everything else
# (attention_head_dim 8, norm_eps 1e-5, flip_sin_to_cos True, freq_shift 0, ...) is diffusers' default.
STUDY_CONFIGS = {
    "paper-fmnist": dict(
        sample_size=32, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=[64, 128, 256, 512],
        norm_num_groups=32, down_block_types=["DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"]),
    "paper-cifar10": dict(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=[128, 256, 256, 256],
        norm_num_groups=32, down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]),
}
STUDY_PARAMETERS = {"paper-fmnist": 42_855_873, "paper-cifar10": 35_746_307}

# Fast: two levels, attention at the lower one and in the middle.
SMALL_CONFIG = dict(
    sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=[16, 32],
    norm_num_groups=8, attention_head_dim=8, down_block_types=["DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D"])

TIMESTEPS = [torch.tensor(0), torch.tensor(250), torch.tensor(999), torch.tensor([999, 0])]


def diffusers_unet(config: dict, seed: int = 0):
    """A seeded UNet2DModel whose GroupNorm affines and biases are moved off their init (ones, zeros, and biases
    drawn like their weights), so that a map swapping two same-shaped tensors cannot agree by symmetry."""
    torch.manual_seed(seed)
    model = diffusers.UNet2DModel(**config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or "norm" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


def our_unet(config, state):
    model = UNet(config).eval()
    model.load_state_dict(state)  # strict: every key of ours, nothing else
    return model


def max_difference(theirs, ours, x) -> float:
    worst = 0.0
    with torch.no_grad():
        for t in TIMESTEPS:
            expected = theirs(x, t).sample
            got = ours(x, t)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=lambda m: f"t={t.tolist()}: {m}")
            worst = max(worst, (got - expected).abs().max().item())
    return worst


@pytest.mark.parametrize("preset", sorted(STUDY_CONFIGS))
def test_study_network_matches_diffusers(preset):
    study = STUDY_CONFIGS[preset]
    theirs = diffusers_unet(study)
    config = unet_config_from_diffusers(dict(theirs.config))
    assert config == model_config(preset, MODEL_PRESETS[preset], study["in_channels"])
    ours = our_unet(config, convert_state_dict(theirs.state_dict(), config))
    assert count_parameters(ours) == count_parameters(theirs) == STUDY_PARAMETERS[preset]
    x = torch.randn(2, study["in_channels"], 32, 32, generator=torch.Generator().manual_seed(5))
    worst = max_difference(theirs, ours, x)
    print(f"{preset}: max |ours - diffusers| = {worst:.2e}")


def test_the_comparison_sees_a_wrong_map():
    """Two same-shaped tensors swapped (the attention's query and key projections) are caught: the perturbed
    network is not symmetric in them."""
    theirs = diffusers_unet(SMALL_CONFIG)
    config = unet_config_from_diffusers(SMALL_CONFIG)
    state = convert_state_dict(theirs.state_dict(), config)
    for p in ("weight", "bias"):
        q, k = f"mid_attn.to_q.{p}", f"mid_attn.to_k.{p}"
        state[q], state[k] = state[k], state[q]
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    with pytest.raises(AssertionError):
        max_difference(theirs, our_unet(config, state), x)


def test_round_trip_through_save_pretrained(tmp_path):
    theirs = diffusers_unet(SMALL_CONFIG, seed=3)
    theirs.save_pretrained(tmp_path / "src")
    assert (tmp_path / "src" / "diffusion_pytorch_model.safetensors").is_file()
    written = import_diffusers_unet(tmp_path / "src", tmp_path / "model.pt")
    config, state = load_model_file(tmp_path / "model.pt")
    assert config == written == unet_config_from_diffusers(SMALL_CONFIG)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    assert max_difference(theirs, our_unet(config, state), x) <= 1e-5


def test_bin_weights_pipeline_folders_and_pre_017_names_read_the_same(tmp_path, monkeypatch):
    theirs = diffusers_unet(SMALL_CONFIG, seed=4)
    theirs.save_pretrained(tmp_path / "st")
    theirs.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "diffusion_pytorch_model.bin").is_file()
    # A saved pipeline, as the study saved its models: the network is in unet/.
    shutil.copytree(tmp_path / "st", tmp_path / "pipe" / "unet")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    config, reference = load_diffusers_unet(tmp_path / "st")

    def same(folder):
        cfg, state = load_diffusers_unet(tmp_path / folder)
        assert cfg == config and state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)

    monkeypatch.setitem(sys.modules, "diffusers", None)  # loading never needs diffusers
    same("pipe")
    for name in ("safetensors", "safetensors.torch"):  # nor, for .bin weights, safetensors
        monkeypatch.setitem(sys.modules, name, None)
    same("bin")
    with pytest.raises(UserError, match="needs the safetensors package"):
        load_diffusers_unet(tmp_path / "st")

    legacy = {}
    for key, value in theirs.state_dict().items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            key = key.replace(f".{new}.", f".{old}.") if ".attentions." in key else key
        legacy[key] = value
    assert any(".proj_attn." in k for k in legacy)
    state = convert_state_dict(legacy, config)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_without_mid_attention_matches_too():
    cfg = {**SMALL_CONFIG, "add_attention": False}
    theirs = diffusers_unet(cfg)
    config = unet_config_from_diffusers(cfg)
    assert not config.mid_attention
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    assert max_difference(theirs, our_unet(config, convert_state_dict(theirs.state_dict(), config)), x) <= 1e-5


@pytest.mark.parametrize("change,field", [
    ({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}, "down_block_types[1]"),
    ({"up_block_types": ["UpBlock2D", "UpBlock2D"]}, "up_block_types"),
    ({"mid_block_type": None}, "mid_block_type"),
    ({"class_embed_type": "timestep"}, "class_embed_type"),
    ({"num_class_embeds": 10}, "num_class_embeds"),
    ({"time_embedding_type": "fourier"}, "time_embedding_type"),
    ({"flip_sin_to_cos": False}, "flip_sin_to_cos"),
    ({"freq_shift": 1}, "freq_shift"),
    ({"time_embedding_dim": 32}, "time_embedding_dim"),
    ({"norm_eps": 1e-6}, "norm_eps"),
    ({"norm_num_groups": 32}, "norm_num_groups"),
    ({"attn_norm_num_groups": 4}, "attn_norm_num_groups"),
    ({"attention_head_dim": None}, "attention_head_dim"),
    ({"attention_head_dim": 12}, "attention_head_dim"),
    ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift"),
    ({"upsample_type": "resnet"}, "upsample_type"),
    ({"downsample_type": "resnet"}, "downsample_type"),
    ({"downsample_padding": 0}, "downsample_padding"),
    ({"mid_block_scale_factor": 2.0}, "mid_block_scale_factor"),
    ({"center_input_sample": True}, "center_input_sample"),
    ({"act_fn": "gelu"}, "act_fn"),
    ({"out_channels": 2}, "out_channels"),
    ({"sample_size": 15}, "sample_size"),
    ({"some_future_field": 1}, "some_future_field"),
    ({"_class_name": "UNet2DConditionModel"}, "_class_name"),
])
def test_configs_our_unet_cannot_express_are_refused_by_name(change, field):
    with pytest.raises(UserError) as info:
        unet_config_from_diffusers({**SMALL_CONFIG, **change})
    message = str(info.value)
    assert field in message and "\n" not in message


def test_the_cifar_json_as_train_iid_passes_it_is_refused():
    """configs/model/ddim_medium_3ch.json also sets these four fields; train_cl.py (the continual-learning runs)
    ignores them, train_iid.py passes them. Such a network our U-Net cannot compute."""
    extra = dict(norm_eps=1e-6, freq_shift=1, attention_head_dim=None, flip_sin_to_cos=False)
    with pytest.raises(UserError, match="freq_shift|flip_sin_to_cos|norm_eps|attention_head_dim"):
        unet_config_from_diffusers({**STUDY_CONFIGS["paper-cifar10"], **extra})


def test_state_dicts_that_do_not_fit_are_refused_by_name():
    theirs = diffusers_unet(SMALL_CONFIG).state_dict()
    config = unet_config_from_diffusers(SMALL_CONFIG)
    missing = {k: v for k, v in theirs.items() if k != "mid_block.attentions.0.to_q.bias"}
    with pytest.raises(UserError, match=r"lacks 'mid_block\.attentions\.0\.to_q\.bias'"):
        convert_state_dict(missing, config)
    with pytest.raises(UserError, match=r"'down_blocks\.0\.extra\.weight'"):
        convert_state_dict({**theirs, "down_blocks.0.extra.weight": torch.zeros(3)}, config)
    with pytest.raises(UserError, match=r"'conv_out\.bias' has shape \(2,\)"):
        convert_state_dict({**theirs, "conv_out.bias": torch.zeros(2)}, config)
    other = unet_config_from_diffusers({**SMALL_CONFIG, "layers_per_block": 2})  # the wrong config for it
    with pytest.raises(UserError, match="lacks"):
        convert_state_dict(theirs, other)


def test_missing_or_corrupt_files_are_one_line_errors_naming_the_path(tmp_path):
    def refused(call, path, match=None):
        with pytest.raises(UserError) as info:
            call(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        if match:
            assert match in str(info.value)

    refused(load_diffusers_unet, tmp_path / "nowhere")
    folder = tmp_path / "model"
    folder.mkdir()
    refused(load_diffusers_unet, folder / "config.json", "missing")
    (folder / "config.json").write_text("{not json")
    refused(load_diffusers_unet, folder / "config.json", "corrupt")
    (folder / "config.json").write_text(json.dumps(SMALL_CONFIG))
    refused(load_diffusers_unet, folder, "no diffusion_pytorch_model")
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00garbage")
    refused(load_diffusers_unet, folder / "diffusion_pytorch_model.safetensors", "corrupt")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"garbage")
    refused(load_diffusers_unet, folder / "diffusion_pytorch_model.bin", "corrupt")

    refused(load_model_file, tmp_path / "none.pt", "no such model file")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    refused(load_model_file, tmp_path / "bad.pt", "corrupt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    refused(load_model_file, tmp_path / "other.pt", "not a cldiff-bench-unet model file")
    config = unet_config_from_diffusers(SMALL_CONFIG)
    torch.save({"format": "cldiff-bench-unet", "unet_config": config.to_dict(), "state_dict": {}},
               tmp_path / "empty.pt")
    refused(load_model_file, tmp_path / "empty.pt", "does not fit")
