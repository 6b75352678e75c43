"""`cldiff-bench sweep --executor slurm` against a fake cluster: sbatch, srun, sacct, squeue, scancel and scontrol
are small scripts on PATH that record what they are asked and run what a cluster would run. The jobs run for real
on this machine: the test executes the sbatch script submitit wrote, with the environment Slurm gives a job."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("submitit")

from cldiff_bench.checkpoint import CHECKPOINT_NAME  # noqa: E402
from cldiff_bench.cli import main  # noqa: E402
from tests.test_end_to_end import strip_timing  # noqa: E402

FIRST_JOB_ID = 4242

SBATCH = """
import json, os, pathlib, shutil, sys
state = pathlib.Path(os.environ["FAKE_SLURM_DIR"])
with open(state / "calls.jsonl", "a") as f:
    f.write(json.dumps({"tool": "sbatch", "args": sys.argv[1:]}) + "\\n")
counter = state / "next_id"
job = int(counter.read_text()) if counter.exists() else %d
counter.write_text(str(job + 1))
shutil.copy(sys.argv[-1], state / f"{job}.sh")
print(f"Submitted batch job {job}")
""" % FIRST_JOB_ID

SACCT = """
import json, os, pathlib, sys
state = pathlib.Path(os.environ["FAKE_SLURM_DIR"])
with open(state / "calls.jsonl", "a") as f:
    f.write(json.dumps({"tool": "sacct", "args": sys.argv[1:]}) + "\\n")
print("JobID|State|NodeList")
table = state / "sacct.txt"
if table.exists():
    print(table.read_text().strip())
"""

RECORD = """
import json, os, pathlib, sys
state = pathlib.Path(os.environ["FAKE_SLURM_DIR"])
with open(state / "calls.jsonl", "a") as f:
    f.write(json.dumps({"tool": pathlib.Path(sys.argv[0]).name, "args": sys.argv[1:]}) + "\\n")
"""

# srun inside a job: its --output/--error patterns expanded as Slurm expands them, then the command in its place.
SRUN = """
import os, sys
args = sys.argv[1:]
files = {}
while args and args[0].startswith("--"):
    opt = args.pop(0)
    if opt in ("--output", "--error"):
        files[opt] = args.pop(0)
env = os.environ
def expand(p):
    return (p.replace("%A", env.get("SLURM_ARRAY_JOB_ID", "")).replace("%a", env.get("SLURM_ARRAY_TASK_ID", ""))
             .replace("%j", env["SLURM_JOB_ID"]).replace("%t", "0"))
for opt, fd in (("--output", 1), ("--error", 2)):
    if opt in files:
        path = expand(files[opt])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, fd)
os.execvp(args[0], args)
"""


class FakeSlurm:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.state = root / "state"
        self.bin.mkdir(parents=True)
        self.state.mkdir()
        for name, body in (("sbatch", SBATCH), ("sacct", SACCT), ("srun", SRUN), ("squeue", RECORD),
                           ("scancel", RECORD), ("scontrol", RECORD)):
            path = self.bin / name
            path.write_text(f"#!{sys.executable}\n{body}")
            path.chmod(0o755)

    def calls(self, tool: str) -> list[list[str]]:
        path = self.state / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [c["args"] for c in map(json.loads, lines) if c["tool"] == tool]

    def script(self, job: int) -> str:
        return (self.state / f"{job}.sh").read_text()

    def set_states(self, states: dict[str, str]) -> None:
        (self.state / "sacct.txt").write_text("\n".join(f"{j}|{s}|node1" for j, s in states.items()))

    def job_env(self, job: int, index: int | None) -> dict:
        env = {**os.environ, "SLURM_JOB_ID": str(job if index is None else job + 100 + index), "SLURM_PROCID": "0",
               "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1",
               "SLURM_JOB_NODELIST": "node1"}
        if index is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=str(index))
        return env

    def start_job(self, job: int, index: int | None = None) -> subprocess.Popen:
        """Run the job's sbatch script as the cluster would, on this machine."""
        return subprocess.Popen(["bash", str(self.state / f"{job}.sh")], env=self.job_env(job, index),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    fake = FakeSlurm(tmp_path / "cluster")
    monkeypatch.setenv("PATH", f"{fake.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(fake.state))
    return fake


GRID = ["--strategies", "naive", "--streams", "digits-5", "--profile", "tiny", "--iterations", "2", "--no-eval"]
SLURM = ["--executor", "slurm", "--partition", "gpu", "--time", "30", "--gpus-per-task", "1", "--cpus-per-task", "2",
         "--mem-gb", "8", "--array-parallelism", "2", "--sbatch", "account=proj", "--setup", "export FAKE_SETUP=1",
         "--no-progress"]


def sweep_dir_of(out: Path) -> Path:
    return out / "sweeps" / "sweep"


def test_the_array_script_asks_for_the_resources_and_runs_each_cell(tmp_path, slurm, capsys):
    out = tmp_path / "runs"
    assert main(["sweep", *GRID, "--seeds", "0,1,2", "--out", str(out), *SLURM]) == 0
    assert len(slurm.calls("sbatch")) == 1  # one array, no evaluators' job (nothing is evaluated)
    script = slurm.script(FIRST_JOB_ID)
    lines = script.splitlines()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --gpus-per-task=1", "#SBATCH --time=30", "#SBATCH --partition=gpu",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --mem=8GB", "#SBATCH --account=proj",
                 "#SBATCH --signal=USR2@90", "#SBATCH --job-name=cldiff-bench", "export FAKE_SETUP=1"):
        assert line in lines, (line, script)
    sweep_dir = sweep_dir_of(out)
    command = [line for line in lines if "submitit.core._submit" in line]
    assert len(command) == 1 and command[0].startswith("srun ") and str(sweep_dir / "jobs") in command[0]

    # The command each array task runs: its cell's, from the pickle the task loads.
    from submitit.core.utils import DelayedSubmission
    cell = DelayedSubmission.load(sweep_dir / "jobs" / f"{FIRST_JOB_ID}_1_submitted.pkl").function
    assert cell.command() == ["run", "--strategy", "naive", "--stream", "digits-5", "--seed", "1", "--profile",
                              "tiny", "--out", str(out.absolute()), "--iterations", "2", "--no-eval", "--resume",
                              "--no-progress", "--threads", "2"]
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    submission = manifest["submissions"][-1]
    assert submission["jobs"] == {f"digits-5/tiny/naive/seed{i}": f"{FIRST_JOB_ID}_{i}" for i in range(3)}
    assert submission["command"].startswith("cldiff-bench sweep --strategies naive") and "--executor slurm" in \
        submission["command"]
    assert manifest["cells"]["digits-5/tiny/naive/seed1"]["command"] == "cldiff-bench run " + " ".join(
        cell.command()[1:-2])
    assert "cldiff-bench sweep status" in capsys.readouterr().err


def test_a_failed_cell_shows_in_status_with_its_log_line(tmp_path, slurm, capsys):
    out = tmp_path / "runs"
    assert main(["sweep", *GRID, "--seeds", "0,1", "--out", str(out), *SLURM]) == 0
    sweep_dir = sweep_dir_of(out)
    # Cell seed1 fails when it runs: its run directory meanwhile holds another configuration's run.
    run_dir = out / "digits-5/tiny/naive/seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config_hash": "x", "config": {"strategy": "other"}}))
    job = slurm.start_job(FIRST_JOB_ID, 1)
    assert job.wait(timeout=240) != 0  # the job fails as the cell did, so the cluster's accounting shows it
    slurm.set_states({f"{FIRST_JOB_ID}_0": "PENDING", f"{FIRST_JOB_ID}_1": "FAILED"})
    capsys.readouterr()
    assert main(["sweep", "status", str(sweep_dir)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    failed = rows["digits-5/tiny/naive/seed1"]
    assert " failed " in failed and "holds a run with another configuration" in failed
    assert " pending " in rows["digits-5/tiny/naive/seed0"] and "PENDING" in rows["digits-5/tiny/naive/seed0"]
    state = json.loads((sweep_dir / "cells/digits-5__tiny__naive__seed1.json").read_text())
    assert state["state"] == "failed" and state["returncode"] == 2 and state["job_id"] == f"{FIRST_JOB_ID}_1"
    # The job's own result says so too (submitit's record of the exception).
    from submitit.core.utils import pickle_load
    outcome, trace = pickle_load(sweep_dir / "jobs" / f"{FIRST_JOB_ID}_1_0_result.pkl")
    assert outcome == "error" and "CellFailed" in trace


def test_status_wait_follows_the_cluster_until_the_cells_end(tmp_path, slurm):
    out = tmp_path / "runs"
    assert main(["sweep", *GRID, "--out", str(out), *SLURM]) == 0
    slurm.set_states({str(FIRST_JOB_ID): "PENDING"})
    proc = subprocess.Popen([sys.executable, "-m", "cldiff_bench.cli", "sweep", "status", str(sweep_dir_of(out)),
                             "--wait", "--poll", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    assert proc.poll() is None, proc.communicate()  # still waiting on the queued job
    slurm.set_states({str(FIRST_JOB_ID): "NODE_FAIL"})  # it ends without ever running the cell
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    assert "failed" in stdout and "NODE_FAIL" in stdout and "1 failed" in stderr


def test_slurm_needs_sbatch_on_path(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    code = main(["sweep", *GRID, "--out", str(tmp_path / "runs"), "--executor", "slurm"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "sbatch" in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_preempted_cell_is_requeued_and_continues_to_the_uninterrupted_result(tmp_path, tmp_path_factory, slurm,
                                                                                 monkeypatch):
    # The evaluation classifier trained once for the slow tests (test_end_to_end's cache).
    monkeypatch.setenv("CLDIFF_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "shared-cache"))
    args = ["--strategies", "gd", "--streams", "digits-5", "--profile", "tiny", "--iterations", "4",
            "--num-generated", "40", "--checkpoint-every", "1"]
    reference = tmp_path / "reference"
    assert main(["run", "--strategy", "gd", "--stream", "digits-5", "--profile", "tiny", "--iterations", "4",
                 "--num-generated", "40", "--no-progress", "--threads", str(torch.get_num_threads()),
                 "--out", str(reference)]) == 0
    expected = strip_timing(json.loads((reference / "digits-5/tiny/gd/seed0/result.json").read_text()))

    out = tmp_path / "runs"
    assert main(["sweep", *args, "--out", str(out), "--executor", "slurm", "--time", "60", "--cpus-per-task",
                 str(torch.get_num_threads()), "--no-progress"]) == 0
    sweep_dir, run_dir = sweep_dir_of(out), out / "digits-5/tiny/gd/seed0"
    state_file = sweep_dir / "cells/digits-5__tiny__gd__seed0.json"
    job = slurm.start_job(FIRST_JOB_ID)
    deadline = time.time() + 300
    while time.time() < deadline and job.poll() is None:
        ckpt = run_dir / CHECKPOINT_NAME
        if ckpt.exists():
            try:
                position = torch.load(ckpt, weights_only=True)["position"]
            except Exception:
                position = None  # being replaced right now
            if position and (position["task"], position["iteration"]) >= (1, 1):
                break
        time.sleep(0.05)
    assert job.poll() is None, "the cell finished before it could be preempted"
    worker = json.loads(state_file.read_text())["pid"]
    os.kill(worker, signal.SIGUSR2)  # what Slurm sends before it preempts a job or its time runs out
    job.wait(timeout=120)
    assert slurm.calls("scontrol") == [["requeue", str(FIRST_JOB_ID)]]
    state = json.loads(state_file.read_text())
    assert state["state"] == "requeued" and state["requeues"] == 1
    assert not (run_dir / "result.json").exists() and (run_dir / CHECKPOINT_NAME).exists()

    job = slurm.start_job(FIRST_JOB_ID)  # the requeued job: the cell that checkpoint() handed back
    assert job.wait(timeout=300) == 0
    assert strip_timing(json.loads((run_dir / "result.json").read_text())) == expected
    log = (sweep_dir / "logs/digits-5__tiny__gd__seed0.log").read_text()
    assert "attempt 2" in log and "resuming" in log
    resumed = [line for line in log.splitlines() if line.startswith("resuming")]
    assert len(resumed) == 1 and not resumed[0].endswith("iteration 0"), resumed
    assert json.loads(state_file.read_text())["state"] == "done"
