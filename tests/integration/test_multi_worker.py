"""Training on several workers, for real: `train.strategy=multi_worker` (TensorFlow's
MultiWorkerMirroredStrategy) in two processes on this machine's loopback, each with its own TF_CONFIG, the
smoke model on synthetic faces. Both finish; only the chief (worker 0) writes artifacts/train/ and logs to
MLflow, once."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml
from helpers.pipeline import VENV_BIN, smoke_copy

from benchmarks.served import free_port

# Two TensorFlow processes: minutes on a busy 2-core machine, more than the suite's default 600 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

WORKERS = 2
ROWS = 128  # 4 steps of the smoke batch (32) per epoch: the test is about the cluster, not the model


def tf_config(addresses: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def epoch_lines(log: str) -> list[str]:
    """The per-epoch summary lines, without their timings (which differ between workers)."""
    return [re.sub(r" - \d+m?s - [\d.]+m?s/step", "", line) for line in re.findall(r".* - val_loss: .*", log)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """The smoke copy after `dvc repro prepare`, then the train stage's script run by two workers at once."""
    base = tmp_path_factory.mktemp("multi-worker")
    pipeline = smoke_copy(
        base / "repo", overrides=["train.strategy=multi_worker", f"train.max_train_rows={ROWS}"]
    )
    pipeline.run("dvc", "repro", "prepare")
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(WORKERS)]
    procs, logs, tmpdirs = [], [], []
    for index in range(WORKERS):
        tmpdir = base / f"tmp-{index}"  # each worker's TMPDIR: where a non-chief's scratch outputs go
        tmpdir.mkdir()
        log = base / f"worker-{index}.log"
        env = {**pipeline.env, "TF_CONFIG": tf_config(addresses, index), "TMPDIR": str(tmpdir)}
        with open(log, "w") as out:
            procs.append(
                subprocess.Popen(
                    [str(VENV_BIN / "python"), "pipelines/train.py"],
                    cwd=pipeline.root,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        logs.append(log)
        tmpdirs.append(tmpdir)
    deadline = time.monotonic() + 1200
    try:
        codes = [proc.wait(timeout=max(1.0, deadline - time.monotonic())) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    texts = [log.read_text() for log in logs]
    for index, (code, text) in enumerate(zip(codes, texts, strict=True)):
        assert code == 0, f"worker {index} exited {code}:\n{text[-4000:]}"
    return pipeline, texts, tmpdirs


def test_both_workers_train_the_same_steps(cluster):
    pipeline, logs, _ = cluster
    params = yaml.safe_load(pipeline.path("params.yaml").read_text())
    epochs = params["train"]["epochs"]
    for log in logs:
        assert "strategy multi_worker" in log
        assert f"Epoch {epochs}/{epochs}" in log
        # they left together: no worker saw another stop answering (TensorFlow calls that a crash)
        assert "unhealthy" not in log and "crashed" not in log
    # One synchronous training: every worker reports the same, cluster-wide, losses and accuracies.
    lines = [epoch_lines(log) for log in logs]
    assert len(lines[0]) == epochs
    assert all(worker == lines[0] for worker in lines[1:]), lines


def test_only_the_chief_writes_the_outputs(cluster):
    pipeline, logs, tmpdirs = cluster
    params = yaml.safe_load(pipeline.path("params.yaml").read_text())
    train = pipeline.path(params["paths"]["train_out"])
    assert sorted(p.name for p in train.iterdir()) == [
        "history.json", "metrics.json", "model.keras", "run.json", "training_curves.png"
    ]  # fmt: skip
    history = json.loads((train / "history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, params["train"]["epochs"] + 1))
    assert json.loads((train / "run.json").read_text())["run_id"] in logs[0]  # worker 0 wrote it
    assert "best val_accuracy" not in logs[1]
    # The other worker's outputs went to a scratch folder that is gone.
    assert [p.name for p in tmpdirs[1].glob("emotune-worker-*")] == []
    # No per-epoch backups under a cluster (nothing two workers could write over, or restore apart).
    assert not pipeline.path(params["paths"]["train_backup"]).exists()
    for log in logs:
        assert "train: no backups under train.strategy=multi_worker" in log


def test_the_run_is_logged_once(cluster):
    from mlflow import MlflowClient

    pipeline, _, _ = cluster
    params = yaml.safe_load(pipeline.path("params.yaml").read_text())
    client = MlflowClient(tracking_uri=pipeline.tracking_uri)
    experiment = client.get_experiment_by_name(params["tracking"]["experiment"])
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_id == json.loads(pipeline.path("artifacts/train/run.json").read_text())["run_id"]
    assert run.data.params["train.strategy"] == "multi_worker"
    history = json.loads(pipeline.path("artifacts/train/history.json").read_text())
    for name in ("loss", "val_accuracy"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert sorted(steps) == [r["epoch"] for r in history], name  # each epoch once, not once per worker
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(max(r["val_accuracy"] for r in history))


def test_dvc_records_the_chiefs_outputs(cluster):
    """The chief's artifacts/train/ is the train stage's output: `dvc commit` records it in dvc.lock."""
    pipeline, _, _ = cluster
    pipeline.run("dvc", "commit", "--force", "train")
    assert "up to date" in pipeline.run("dvc", "status", "train").stdout
