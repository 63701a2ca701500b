"""The GPU path end to end, on this machine's CPU: `emotune gpu pack` in a real pipeline copy, the bundle's
train.py in an environment like a GPU machine's (PyTorch and Keras, no TensorFlow, OmegaConf or MLflow) with
only the bundle's code, `emotune gpu import`, then `dvc commit` and the real `dvc repro` evaluating and
promoting the imported model without training again."""

from __future__ import annotations

import json
import subprocess

import mlflow
import numpy as np
import pytest
from helpers.pipeline import smoke_copy
from helpers.portable import torch_dir, trainer_env, trainer_python

from emotune.portable import BUNDLE_FILE, CODE_MODULES, FACES_FILE, RUN_FILE, decode_faces

# a pipeline copy, a virtual environment and two trainings: minutes on 2 busy cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_a_bundle_trained_with_pytorch_goes_through_evaluate_and_promote(tmp_path):
    torch_dir()  # skips without PyTorch
    pipeline = smoke_copy(tmp_path / "repo")
    pipeline.run("dvc", "repro", "prepare")
    bundle, run_dir = tmp_path / "bundle", tmp_path / "run"

    packed = pipeline.run("emotune", "gpu", "pack", "--out", str(bundle))
    assert "emotune gpu import" in packed.stdout
    assert sorted(p.name for p in (bundle / "code/emotune").iterdir()) == sorted(CODE_MODULES)
    # the smoke data has a test split, so the run validates on the validation split and trains on all rows
    prepared = np.load(pipeline.path("artifacts/prepared/train.npz"))
    faces = np.load(bundle / FACES_FILE)
    assert np.array_equal(decode_faces(faces["train_png"], faces["train_offsets"]), prepared["x"])
    assert faces["targets"].shape == (len(prepared["y"]), 7)
    assert not (set(faces.files) & {"test_png", "test_labels"})  # the test faces never leave
    refused = pipeline.run("emotune", "gpu", "pack", "--out", str(bundle), check=False)
    assert refused.returncode != 0 and "not empty" in refused.stderr

    python = trainer_python(tmp_path / "gpu-venv")
    assert subprocess.run([python, "-c", "import tensorflow"], capture_output=True).returncode != 0
    trained = subprocess.run(
        [python, bundle / "train.py", "--out", run_dir, "--budget-minutes", "60"],
        cwd=tmp_path,  # not the repository: only the bundle's code can be imported
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "one epoch takes" in trained.stdout and "training 2 of 2 epochs" in trained.stdout
    record = json.loads((run_dir / RUN_FILE).read_text())
    assert record["backend"].startswith("keras") and "torch" in record["backend"]
    assert record["bundle_key"] == json.loads((bundle / BUNDLE_FILE).read_text())["key"]
    assert [r["epoch"] for r in json.loads((run_dir / "history.json").read_text())] == [1, 2]

    imported = pipeline.run("emotune", "gpu", "import", str(run_dir))
    run_info = json.loads(pipeline.path("artifacts/train/run.json").read_text())
    assert run_info["run_id"] in imported.stdout
    client = mlflow.MlflowClient(pipeline.tracking_uri)
    run = client.get_run(run_info["run_id"])
    assert run.data.tags["trained_on"] == record["device"]
    assert run.data.params["train.optimizer"] == "adam"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]

    pipeline.run("dvc", "commit", "-f", "train")
    repro = pipeline.run("dvc", "repro", timeout=600)
    assert "Stage 'train' didn't change" in repro.stdout
    assert "Running stage 'evaluate'" in repro.stdout and "Running stage 'promote'" in repro.stdout
    status = pipeline.run("dvc", "status", "train", "evaluate", "promote").stdout
    assert "changed" not in status
    evaluated = json.loads(pipeline.path("artifacts/evaluate/metrics.json").read_text())
    assert evaluated["split"] == "test"

    # A run is imported only into the configuration it trained.
    pipeline.run("emotune", "config", "compose", "experiment=smoke", "train.learning_rate=0.01", "--out",
                 "params.yaml")  # fmt: skip
    mismatch = pipeline.run("emotune", "gpu", "import", str(run_dir), check=False)
    assert mismatch.returncode == 2
    assert "config.train.learning_rate" in mismatch.stderr
