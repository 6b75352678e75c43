"""A diffusers UNet2DModel (as the study's code trains) imported, scored, and continued from, through the CLI."""
import json

import pytest
import torch

from cldiff_bench.cli import main
from cldiff_bench.diffusion.unet import MODEL_PRESETS, UNet, model_config

diffusers = pytest.importorskip("diffusers")

# diffusers' spelling of the `tiny` preset: channels 16/32/32, attention at the lowest level and in the middle.
TINY_DIFFUSERS = dict(sample_size=32, in_channels=1, out_channels=1, layers_per_block=1,
                      block_out_channels=(16, 32, 32), norm_num_groups=8, attention_head_dim=8,
                      down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


@pytest.fixture
def diffusers_folder(tmp_path):
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(**TINY_DIFFUSERS)
    model.save_pretrained(tmp_path / "study-model")
    return tmp_path / "study-model", model


def test_import_unet_then_run_from_it_and_score_it(tmp_path, diffusers_folder, capsys):
    folder, reference = diffusers_folder
    model_file = tmp_path / "imported.pt"
    assert main(["import-unet", str(folder), "--out", str(model_file)]) == 0
    # The imported file computes diffusers' function.
    from cldiff_bench.diffusion.diffusers_import import load_model_file
    config, state = load_model_file(model_file)
    assert config == model_config("tiny", MODEL_PRESETS["tiny"], 1)
    ours = UNet(config).eval()
    ours.load_state_dict(state)
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([10, 900])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t), reference.eval()(x, t).sample, rtol=0, atol=1e-5)

    # A run that starts from it records the weights it started from; the folder works as well as the file.
    out = tmp_path / "runs"
    assert main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--model", "tiny",
                 "--init-model", str(folder), "--iterations", "1", "--no-eval", "--no-progress",
                 "--out", str(out)]) == 0
    result = json.loads((out / "digits-5/tiny/naive/seed0/result.json").read_text())
    assert result["config"]["init_model"]["name"] == "study-model"

    capsys.readouterr()
    assert main(["score", str(model_file), "--stream", "digits-5", "--task", "1", "--profile", "tiny",
                 "--no-progress", "--out", str(tmp_path / "scores.json")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert printed["fid"] == saved["metrics"]["fid"] and printed["num_generated"] == 200
    assert len(saved["metrics"]["class_histogram_true"]) == 10


def test_a_model_of_another_architecture_is_refused_in_one_line(tmp_path, diffusers_folder, capsys):
    folder, _ = diffusers_folder
    out = tmp_path / "runs"
    code = main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--model", "small",
                 "--init-model", str(folder), "--iterations", "1", "--no-eval", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "another architecture" in err[0] and "Traceback" not in err[0]
    assert not (out / "digits-5/tiny/naive/seed0/config.json").exists()
