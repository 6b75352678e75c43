"""Logs a researcher can use: the loss CSV always, TensorBoard events on request, the per-task lines without bars."""
import csv

from cldiff_bench.cli import main


def test_losses_csv_and_tensorboard_events_and_log_lines_without_bars(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "--strategy", "gd", "--stream", "digits-5", "--profile", "tiny", "--iterations", "3",
                 "--no-eval", "--no-progress", "--log", "tensorboard", "--out", str(out)]) == 0
    run_dir = out / "digits-5/tiny/gd/seed0"
    with (run_dir / "losses.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["task"]), int(r["iteration"])) for r in rows] == [(k, i) for k in range(5) for i in range(3)]
    assert all(float(r["loss"]) > 0 for r in rows)
    # gd replays from task 1 on: its replay loss is logged there and only there.
    assert all((r["replay_loss"] != "") == (int(r["task"]) > 0) for r in rows)
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    printed = capsys.readouterr().out
    assert sum(line.startswith("task ") and " done: train_loss=" in line for line in printed.splitlines()) == 5
