"""The line a run starts with: its budget, its ruler and an estimate of its time from what it will compute."""
from cldiff_bench.context import RunContext
from cldiff_bench.registry import load_registry
from cldiff_bench.settings import RunConfig, resolve_settings
from cldiff_bench.start_line import estimated_seconds, start_line

REGISTRY = load_registry()


def test_each_strategy_counts_what_one_iteration_trains_and_draws():
    registry = load_registry()
    images = {name: registry.strategy(name).iteration_images(
        registry.strategy(name).resolve_options("cifar10-5", {}), 1, 64)
        for name in ("naive", "joint", "lwf", "gaussian", "gr", "gd")}
    # the real batch; + replayed inputs; the teacher's 10 DDIM steps per replay image, + its prediction as target
    assert images == {"naive": (64, 0), "joint": (64, 0), "lwf": (64, 64), "gaussian": (128, 64),
                      "gr": (128, 640), "gd": (128, 704)}
    assert registry.strategy("gd").iteration_images({"teacher_steps": 2}, 0, 64) == (64, 0)  # no teacher yet


def test_the_estimate_adds_training_replay_and_evaluation(tmp_path):
    settings = resolve_settings(RunConfig(strategy="gd", stream="digits-5", profile="tiny", device="cpu",
                                          budget={"iterations": 3}, out=tmp_path, progress=False), REGISTRY)
    context = RunContext.build(settings, REGISTRY)
    ev = settings.eval_settings
    training_only = estimated_seconds(settings, context, train_s=1.0, sample_s=0.0)
    assert training_only == 3 * 32 + 4 * 3 * 64  # task 0 on its batch, then real + replayed inputs
    sampling = estimated_seconds(settings, context, train_s=0.0, sample_s=1.0)
    teacher = 4 * 3 * 32 * (2 + 1)  # tasks 1-4: 2 DDIM steps per replay image and the teacher's target
    metrics = 5 * (settings.budget.grid_samples + ev.num_generated) * settings.fid_steps
    # the solver replays one image per real image (all of them at tiny) and epoch, from task 1 on
    solver = sum(len(t.train) for t in context.stream.tasks[1:]) * ev.solver_epochs * settings.fid_steps
    assert sampling == teacher + metrics + solver
    assert estimated_seconds(settings, context, 1.0, 1.0, from_task=4) < training_only + sampling
    line = start_line(settings, context)
    assert line.startswith("budget: tiny (0.28M), 3 iterations per task at batch 32") and "\n" not in line
    assert "pinned ruler" in line and "expect about" in line
