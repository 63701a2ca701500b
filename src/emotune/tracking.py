"""MLflow: one tracking store for every stage and the service, and the helpers that log to it.

The store is `tracking_uri(cfg)`: the MLFLOW_TRACKING_URI environment variable when set, otherwise
`tracking.uri` from the configuration (default `sqlite:///mlflow.db`, relative to the working directory,
i.e. the repository root where DVC runs the stages). Run artifacts go to `tracking.artifact_location`
(default ./mlruns), fixed when the experiment is first created; on a tracking server (an http(s) URI) the
server decides where they go, and nothing is written locally.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import yaml
from omegaconf import DictConfig

from emotune.config import flatten, to_yaml


def tracking_uri(cfg: DictConfig | Mapping[str, Any]) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or str(cfg["tracking"]["uri"])


def is_server(uri: str) -> bool:
    """Whether `uri` names a tracking server (http, https), not a store on this machine."""
    return uri.split(":", 1)[0].lower() in ("http", "https")


def experiment_id(cfg: DictConfig | Mapping[str, Any]) -> str:
    """Point MLflow at the store and return the experiment's id, creating it with our artifact location."""
    mlflow.set_tracking_uri(tracking_uri(cfg))
    name = str(cfg["tracking"]["experiment"])
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if is_server(tracking_uri(cfg)):
        # A tracking server keeps the artifacts where it was told to (`mlflow server --serve-artifacts`
        # proxies them): a local folder here would be one machine's, invisible to the rest of the team.
        return mlflow.create_experiment(name)
    # One folder per experiment under the artifact root (./mlruns/emotune/<run id>/artifacts, .../models/).
    location = (Path(str(cfg["tracking"]["artifact_location"])) / name).resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def start_run(
    cfg: DictConfig | Mapping[str, Any], run_id: str | None = None, run_name: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """A new run in the configured experiment, or (with `run_id`) the existing one, resumed.

    An exception inside marks the run FAILED.
    """
    exp = experiment_id(cfg)
    if run_id is not None and mlflow.get_run(run_id).info.experiment_id != exp:
        raise ValueError(f"MLflow run {run_id} is not in experiment {cfg['tracking']['experiment']!r}")
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp, run_name=run_name) as run:
        yield run


def run_exists(cfg: DictConfig | Mapping[str, Any], run_id: str) -> bool:
    """Whether the configured store holds run `run_id` in the configured experiment."""
    exp = experiment_id(cfg)
    try:
        return mlflow.get_run(run_id).info.experiment_id == exp
    except mlflow.exceptions.MlflowException:
        return False


def git_commit(cwd: Path | str = ".") -> str:
    """The checked-out commit, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def data_version(dvc_file: Path | str = "data.dvc") -> str:
    """The DVC hash of the raw data (outs[0].md5 of data.dvc), or "unknown" without one."""
    try:
        return str(yaml.safe_load(Path(dvc_file).read_text())["outs"][0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


def run_tags(cfg: DictConfig | Mapping[str, Any], prepared_report: Mapping[str, Any] | None = None) -> dict:
    """Where a run came from: code (git), raw data (DVC hash), whether the data was synthetic."""
    tags = {
        "git_commit": git_commit(),
        "data_version": data_version(),
        "data_synthetic": str(bool(cfg["data"]["synthetic"])).lower(),
        "model_name": str(cfg["model"]["name"]),
    }
    if prepared_report:
        source = prepared_report.get("source_sha256") or prepared_report.get("sha256")
        if source:
            tags["data_source_sha256"] = str(source)
    return tags


def log_config(cfg: DictConfig, prepared_report: Mapping[str, Any] | None = None) -> None:
    """The flattened configuration as params, the whole of it as config/params.yaml, and the run's tags."""
    params = {k: ("null" if v is None else v) for k, v in flatten(cfg).items()}
    mlflow.log_params(params)
    mlflow.log_text(to_yaml(cfg), "config/params.yaml")
    mlflow.set_tags(run_tags(cfg, prepared_report))


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log the numeric entries (booleans and strings are skipped: they are not metrics)."""
    numeric = {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if numeric:
        mlflow.log_metrics(numeric, step=step)


class EpochLogger(keras.callbacks.Callback):
    """Per-epoch metrics (loss, accuracy, val_loss, val_accuracy, learning_rate) to the active run.

    Steps count epochs from 1, matching history.json.
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        log_metrics(logs or {}, step=epoch + 1)


def record_resume(resumes: int, first_epoch: int, code_changed: Sequence[str]) -> None:
    """Tags on the active run saying it was resumed, from which epoch, and across which code changes."""
    tags = {"resumes": resumes, f"resume_{resumes}_from_epoch": first_epoch + 1}
    if code_changed:
        tags[f"resume_{resumes}_code_changed"] = ", ".join(Path(p).name for p in code_changed)[:5000]
    set_tags(tags)


def log_missing_epochs(history: Sequence[Mapping[str, float]]) -> None:
    """Log the epochs of `history` the active run lacks: a run killed after backing up an epoch but before
    reporting it gets that epoch once, not zero or two times."""
    run = mlflow.active_run()
    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")}
    for record in history:
        if int(record["epoch"]) not in logged:
            log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_files(paths: Sequence[Path | str], artifact_path: str | None = None) -> None:
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def pip_requirements() -> list[str]:
    """What a logged Keras model needs: stated explicitly, since MLflow's inference of it takes ~11 s."""
    reqs = [f"keras=={keras.__version__}"]
    for dist in ("tensorflow-cpu", "tensorflow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            reqs.append(f"{dist}=={metadata.version(dist)}")
            break
    return reqs


def log_keras_model(model: keras.Model, name: str = "model") -> Any:
    """Log `model` (MLflow's Keras flavour, .keras format) to the active run; returns MLflow's ModelInfo.

    The signature states the contract: float32 grey levels 0..255 (N, S, S, 1) -> 7 probabilities.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *model.input_shape[1:]), "face")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, model.output_shape[-1]), "probabilities")]),
    )
    return mlflow.keras.log_model(model, name=name, signature=signature, pip_requirements=pip_requirements())


def log_run_start(
    cfg: DictConfig | Mapping[str, Any],
    prepared_report: Mapping[str, Any],
    train_rows: int,
    validation: Mapping[str, Any],
) -> None:
    """A new training run's configuration, tags and sizes (the active run)."""
    log_config(cfg, prepared_report)
    log_metrics({"train_rows": train_rows, "val_rows": validation["rows"]})
    # promote compares only runs whose validation faces match (a best_val_accuracy on other faces is not
    # comparable)
    set_tags({"validation_source": validation["source"], "validation_set": validation["fingerprint"]})


def log_run_end(
    cfg: DictConfig | Mapping[str, Any],
    run: mlflow.ActiveRun,
    out: Path,
    metrics: Mapping[str, Any],
    model: keras.Model,
    validation: Mapping[str, Any],
) -> dict[str, Any]:
    """A finished run's metrics, curves, history and model (from the train folder `out`); returns what
    run.json records for evaluate and promote."""
    log_metrics(metrics)
    log_files([out / "training_curves.png", out / "history.json"])
    model_info = log_keras_model(model)
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "tracking_uri": tracking_uri(cfg),
        "model_uri": model_info.model_uri,
        "validation": dict(validation),
    }


def read_run_json(path: Path | str) -> dict[str, Any]:
    """artifacts/train/run.json: {"run_id", "experiment_id", "tracking_uri", "model_uri"}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the train stage first (dvc repro train)")
    return json.loads(path.read_text())
