"""The committed board stays what it is through changes to the code: every cell still resolves to the
configuration (and hash) it was published with, and the page is rebuilt from its folder byte for byte."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cldiff_bench.context import RunContext
from cldiff_bench.diffusion.schedule import NoiseSchedule
from cldiff_bench.diffusion.unet import model_config
from cldiff_bench.leaderboard.build import build_leaderboard
from cldiff_bench.output_dir import config_hash
from cldiff_bench.registry import load_registry
from cldiff_bench.settings import RunConfig, resolve_settings

BOARD = Path(__file__).resolve().parent.parent / "leaderboard"
PUBLISHED = [p for p in sorted(BOARD.glob("results/*/*/*/seed*/result.json")) if "real-data" not in p.parts]


def _resolved_config(recorded: dict, registry, out: Path) -> dict:
    """The configuration `run` would record for this cell today. The class order is the data set's (Avalanche's
    split of the real images, absent here), so it is taken from the record; everything else is resolved anew."""
    budget = recorded["budget"]
    settings = resolve_settings(RunConfig(
        strategy=recorded["strategy"], stream=recorded["stream"], seed=recorded["seed"], profile=budget["profile"],
        strategy_options=recorded["strategy_options"], device="cpu", out=out), registry)
    unet = model_config(settings.budget.model, settings.model_preset, recorded["model"]["in_channels"])
    stream = SimpleNamespace(class_order=recorded["class_order"])
    context = RunContext(settings, stream, unet, meter=None, core=SimpleNamespace(schedule=NoiseSchedule()),
                         strategy=None, evaluator=None)
    return context.resolved_config()


@pytest.mark.skipif(not PUBLISHED, reason="no published board in this checkout")
def test_every_published_cell_resolves_to_its_recorded_configuration_and_hash(tmp_path):
    registry = load_registry()
    for path in PUBLISHED:
        recorded = json.loads(path.read_text())["config"]
        resolved = _resolved_config(recorded, registry, tmp_path)
        # Speed settings are recorded but are no part of the identity (they change how fast, not what).
        assert {**resolved, "speed": None} == {**recorded, "speed": None}, path
        assert config_hash(resolved) == config_hash(recorded), path


@pytest.mark.skipif(not PUBLISHED, reason="no published board in this checkout")
def test_the_committed_page_is_rebuilt_from_its_folder_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.chdir(BOARD.parent)  # the page quotes its command as README shows it: from the repository's root
    build_leaderboard([Path("leaderboard/results")], tmp_path / "board")
    assert (tmp_path / "board" / "README.md").read_text() == (BOARD / "README.md").read_text()
