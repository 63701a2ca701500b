"""Resumable training (emotune.resume): the backup's key and code checks, and a real `dvc repro train` killed
with SIGKILL after its second epoch and started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from helpers.pipeline import VENV_BIN, copy_working_tree, synthesize_command

from emotune.config import REPO_ROOT, compose
from emotune.resume import (
    ResumeRefused,
    TrainingBackup,
    changed_files,
    code_fingerprint,
    run_definition,
    run_key,
)

EPOCHS = 5


def write_arrays(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (8, 48, 48), np.uint8), y=rng.integers(0, 7, 8, np.uint8))
    return path


def test_the_key_follows_configuration_and_data_but_not_the_resume_options(tmp_path):
    cfg = compose(["experiment=smoke"])
    data = write_arrays(tmp_path / "train.npz", 0)
    key = run_key(run_definition(cfg, [data]))
    assert key == run_key(run_definition(compose(["experiment=smoke"]), [data]))
    assert key == run_key(
        run_definition(compose(["experiment=smoke", "train.resume.allow_code_change=true"]), [data])
    )
    assert key != run_key(run_definition(compose(["experiment=smoke", "train.learning_rate=0.01"]), [data]))
    assert key != run_key(run_definition(compose(["experiment=smoke", "seed=7"]), [data]))
    # what serving or evaluation use does not define the training run
    assert key == run_key(run_definition(compose(["experiment=smoke", "evaluate.tta=false"]), [data]))
    assert key != run_key(run_definition(cfg, [write_arrays(tmp_path / "train.npz", 1)]))


def test_code_fingerprint_names_changed_and_missing_files(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    saved = code_fingerprint(package="no_such_package", extra=[a, b])
    assert set(saved) == {str(a.resolve()), str(b.resolve())}
    assert changed_files(saved) == []
    a.write_text("x = 1  # a harmless refactor is still a change\n")
    b.unlink()
    assert changed_files(saved) == [str(a.resolve()), str(b.resolve())]
    assert str(Path(keras.__file__).resolve()) not in code_fingerprint()  # only emotune's own modules
    assert any(p.endswith("emotune/resume.py") for p in code_fingerprint())


def tiny_trainer() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(
        inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Dropout(0.2)(inputs))
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    return model


def test_a_backup_restores_variables_and_a_code_change_needs_permission(tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(32) % 3]
    source = tmp_path / "stage.py"
    source.write_text("# the training code\n")
    definition = {"config": {"lr": 0.01}, "data": {}}

    def backup() -> TrainingBackup:
        return TrainingBackup(tmp_path / "backups", definition, code_fingerprint(extra=[source]), epochs=3)

    first = backup()
    assert first.restored is None and first.initial_epoch == 0
    trained = tiny_trainer()
    trained.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[first])
    latest = json.loads((first.directory / "latest.json").read_text())
    assert latest == {"directory": "epoch-0002", "epoch": 2}
    assert [p.name for p in first.directory.glob("epoch-*")] == ["epoch-0002"]  # older states pruned

    second = backup()
    assert second.initial_epoch == 2 and [r["epoch"] for r in second.restored.history] == [1, 2]
    fresh = tiny_trainer()
    fresh.fit(x, y, epochs=2, initial_epoch=2, verbose=0, callbacks=[second])  # zero epochs: restore only
    for a, b in zip(trained.variables, fresh.variables, strict=True):  # weights and the dropout RNG state
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    for a, b in zip(trained.optimizer.variables, fresh.optimizer.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))

    source.write_text("# the training code, refactored\n")
    with pytest.raises(ResumeRefused, match=r"stage\.py.*train\.resume\.allow_code_change=true"):
        backup()
    allowed = TrainingBackup(
        tmp_path / "backups", definition, code_fingerprint(extra=[source]), epochs=3, allow_code_change=True
    )
    assert allowed.initial_epoch == 2 and allowed.restored.code_changed == [str(source.resolve())]
    other = TrainingBackup(tmp_path / "backups", {**definition, "config": {"lr": 0.1}}, {}, epochs=3)
    assert other.restored is None and other.other_backups() == [first.key]
    allowed.remove()
    assert not first.directory.exists()


# --- the real stage, killed and resumed ---------------------------------------------------------------------


def stage_env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }


def run(root: Path, *cmd: str, check: bool = True, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=root, env=stage_env(root), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def latest_backup_epoch(root: Path) -> int:
    pointers = list((root / "artifacts/train_backup").glob("*/latest.json"))
    return max((json.loads(p.read_text())["epoch"] for p in pointers), default=0)


def start_and_kill(root: Path, *cmd: str, when: str, after_epoch: int = 0, timeout: float = 300) -> str:
    """Start `cmd` in its own process group and SIGKILL the whole group (dvc and the stage) when the backup
    holds `after_epoch` epochs, or when `when` appears in its output."""
    log = root / f"kill-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=stage_env(root), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if (after_epoch and latest_backup_epoch(root) >= after_epoch) or (
                    when and when in log.read_text()
                ):
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return log.read_text()
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    pytest.fail(f"{' '.join(cmd)} ended (or timed out) before it could be killed:\n{log.read_text()[-3000:]}")


def weights(path: Path) -> list[np.ndarray]:
    return keras.saving.load_model(path, compile=False).get_weights()


@pytest.mark.slow
def test_a_killed_train_stage_resumes_where_it_stopped(tmp_path):
    root = tmp_path / "repo"
    copy_working_tree(REPO_ROOT, root)
    run(
        root,
        "emotune",
        "config",
        "compose",
        "experiment=smoke",
        f"train.epochs={EPOCHS}",
        "--out",
        "params.yaml",
    )
    run(root, "git", "init", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "copy")
    run(root, *synthesize_command(root))

    # The reference: one uninterrupted run. A finished run leaves no backup behind.
    run(root, "dvc", "repro", "train")
    reference = weights(root / "artifacts/train/model.keras")
    reference_history = json.loads((root / "artifacts/train/history.json").read_text())
    assert not (root / "artifacts/train_backup").exists()

    # The same run again, SIGKILLed (dvc and the stage) once its second epoch is backed up.
    start_and_kill(root, "dvc", "repro", "train", "--force", when="", after_epoch=2)
    assert latest_backup_epoch(root) == 2
    (backup_dir,) = (root / "artifacts/train_backup").iterdir()
    killed_run = json.loads((backup_dir / "epoch-0002/state.json").read_text())["run_id"]
    assert not (root / "artifacts/train/run.json").exists()  # DVC removed the outputs; the backup survived

    # (d) another configuration does not resume the backup: it starts at epoch 1 (killed once it says so)
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params.replace("learning_rate: 0.001", "learning_rate: 0.002"))
    log = start_and_kill(root, "dvc", "repro", "train", when="backing up every epoch")
    assert f"epoch 1 of {EPOCHS}" in log and "resuming from epoch" not in log
    assert f"not resuming backups of other configurations or data: {backup_dir.name}" in log
    (root / "params.yaml").write_text(params)
    for other in (root / "artifacts/train_backup").iterdir():
        if other != backup_dir:
            subprocess.run(["rm", "-rf", str(other)], check=True)

    # A change of the training code since the backup: refused, with the file named and the way out ...
    # (the copy's stage script: its emotune package is the checkout's, installed in the environment)
    script = root / "pipelines/train.py"
    script.write_text(script.read_text() + "\n# a harmless refactor\n")
    refused = run(root, "dvc", "repro", "train", check=False)
    assert refused.returncode != 0
    assert "pipelines/train.py" in refused.stderr + refused.stdout
    assert "train.resume.allow_code_change=true" in refused.stderr + refused.stdout
    assert latest_backup_epoch(root) == 2  # the refusal kept the backup

    # ... and allowed when asked for: (a) it starts at epoch 3, in the same MLflow run
    allow = params.replace("allow_code_change: false", "allow_code_change: true")
    assert allow != params
    (root / "params.yaml").write_text(allow)
    resumed = run(root, "dvc", "repro", "train")
    assert f"resuming from epoch 3 of {EPOCHS}" in resumed.stdout
    assert "the training code changed since that backup" in resumed.stdout and "train.py" in resumed.stdout
    assert not (root / "artifacts/train_backup").exists()
    run_info = json.loads((root / "artifacts/train/run.json").read_text())
    assert run_info["run_id"] == killed_run

    # (b) history and MLflow hold each epoch exactly once
    history = json.loads((root / "artifacts/train/history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    for metric in ("loss", "val_accuracy", "learning_rate"):
        steps = sorted(m.step for m in client.get_metric_history(killed_run, metric))
        assert steps == list(range(1, EPOCHS + 1)), metric
    tags = client.get_run(killed_run).data.tags
    assert tags["resumes"] == "1" and tags["resume_1_from_epoch"] == "3"
    assert tags["resume_1_code_changed"] == "train.py"
    assert client.get_run(killed_run).info.status == "FINISHED"

    # (c) the final weights equal the uninterrupted run's, bit for bit (float32, one seed, the same batches)
    for got, want in zip(weights(root / "artifacts/train/model.keras"), reference, strict=True):
        np.testing.assert_array_equal(got, want)
    assert [r["val_accuracy"] for r in history] == [r["val_accuracy"] for r in reference_history]


def test_resuming_with_weight_averaging_and_plateau_matches_an_uninterrupted_fit(tmp_path):
    """EMA weights swapped in at the epoch boundary, the plateau schedule's counters and learning rate, the
    dropout RNG: a fit killed as its third epoch begins and resumed ends where an uninterrupted fit ends."""
    x = np.random.default_rng(1).normal(size=(48, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(48) % 3]

    class Killed(Exception):
        pass

    def kill_at_third_epoch(epoch: int, logs: dict | None) -> None:
        if epoch == 2:
            raise Killed

    def fit(initial_epoch: int = 0, backup: TrainingBackup | None = None, kill: bool = False) -> keras.Model:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        hidden = keras.layers.Dropout(0.3)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
        optimizer = keras.optimizers.SGD(0.5, use_ema=True, ema_momentum=0.5)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy")
        callbacks = [
            keras.callbacks.SwapEMAWeights(swap_on_epoch=True),
            keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0),
        ]
        if backup is not None:
            backup.track(callbacks, checkpoint=None)
            callbacks.append(backup)
        if kill:
            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_begin=kill_at_third_epoch))
        model.fit(
            x,
            y,
            epochs=3,
            initial_epoch=initial_epoch,
            batch_size=8,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )
        return model

    def backup() -> TrainingBackup:
        return TrainingBackup(tmp_path, {"config": {}, "data": {}}, {}, epochs=3)

    uninterrupted = fit()
    with pytest.raises(Killed):
        fit(backup=backup(), kill=True)
    again = backup()
    assert again.initial_epoch == 2
    resumed = fit(again.initial_epoch, again)
    assert float(keras.ops.convert_to_numpy(resumed.optimizer.learning_rate)) < 0.5  # the plateau halved it
    for a, b in zip(uninterrupted.variables, resumed.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    for a, b in zip(uninterrupted.optimizer.variables, resumed.optimizer.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_a_resumed_run_whose_mlflow_run_is_gone_is_detected(tmp_path, monkeypatch):
    from emotune import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = compose(["experiment=smoke"])
    with tracking.start_run(cfg) as run:
        pass
    assert tracking.run_exists(cfg, run.info.run_id)
    assert not tracking.run_exists(cfg, "0" * 32)  # e.g. the backup outlived the tracking store
