"""Evaluation: any saved model on any FER2013-format faces -> accuracy, macro-F1, per-class report,
confusion matrices and (optionally) horizontal-flip test-time augmentation, reported separately.

The DVC `evaluate` stage (`evaluate_stage`) runs it on the held-out split of the prepared data and logs the
results to the training run in MLflow; `emotune evaluate` (evaluate_commands.py) runs it on a file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emotune.atomic import atomic_output, write_json
from emotune.data.splits import choose_split, fingerprint, validation_faces
from emotune.labels import EMOTIONS, NUM_CLASSES
from emotune.preprocess import to_model_input

# uint8 faces (N, 48, 48) -> class probabilities (N, 7)
Predictor = Callable[[np.ndarray], np.ndarray]


def load_predictor(model_path: Path | str, batch_size: int = 256) -> Predictor:
    """uint8 faces -> probabilities with the model file's backend (emotune.recognizer: .keras or .onnx),
    fed the same to_model_input tensors as training and serving, `batch_size` faces per call."""
    from emotune.recognizer import load_backend

    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    backend = load_backend(path)

    def predict(faces: np.ndarray) -> np.ndarray:
        x = to_model_input(faces)
        parts = [backend.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, NUM_CLASSES), np.float32)

    return predict


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """accuracy, macro_f1, n, the sklearn classification report and the raw 7x7 confusion matrix.

    Macro averages run over the classes present in the labels or the predictions (sklearn's default), so
    a class missing from a small sample does not count as a zero.
    """
    from sklearn.metrics import classification_report, confusion_matrix

    y_true = np.asarray(y_true).astype(np.int64)
    probs = np.asarray(probs)
    if probs.shape != (len(y_true), NUM_CLASSES):
        raise ValueError(f"expected probabilities of shape ({len(y_true)}, {NUM_CLASSES}), got {probs.shape}")
    if len(y_true) == 0:
        raise ValueError("nothing to evaluate: no rows")
    y_pred = probs.argmax(axis=1)
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    report = classification_report(
        y_true,
        y_pred,
        labels=present,
        target_names=[EMOTIONS[i] for i in present],
        output_dict=True,
        zero_division=0,
    )
    return {
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "n": len(y_true),
        "report": report,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=range(NUM_CLASSES)).tolist(),
    }


def evaluate_faces(
    predictor: Predictor, faces: np.ndarray, labels: np.ndarray, tta: bool = False
) -> dict[str, Any]:
    """Metrics of `predictor` on the faces; with `tta`, also those of averaging with mirrored faces."""
    probs = predictor(faces)
    result = classification_metrics(labels, probs)
    if tta:
        flipped = np.ascontiguousarray(np.asarray(faces)[:, :, ::-1])
        tta_result = classification_metrics(labels, (probs + predictor(flipped)) / 2.0)
        result["tta_accuracy"] = tta_result["accuracy"]
        result["tta_macro_f1"] = tta_result["macro_f1"]
    return result


def summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers (what metrics.json and `emotune evaluate --json` hold)."""
    keys = ("accuracy", "macro_f1", "n", "split", "split_note", "tta_accuracy", "tta_macro_f1", "synthetic")
    return {k: result[k] for k in keys if k in result}


def plot_confusion_matrices(matrix: Any, path: Path | str, title: str = "") -> None:
    """Raw counts and row-normalised (recall per true class) confusion matrices side by side (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = np.asarray(matrix, dtype=np.int64)
    support = raw.sum(axis=1, keepdims=True)
    normalised = np.divide(raw, support, out=np.zeros(raw.shape, np.float64), where=support > 0)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, data, label, fmt in (
        (axes[0], raw, "counts", "d"),
        (axes[1], normalised, "normalised by true class", ".2f"),
    ):
        ax.imshow(data, cmap="Blues")
        ax.set_xticks(range(NUM_CLASSES), EMOTIONS, rotation=45, ha="right")
        ax.set_yticks(range(NUM_CLASSES), EMOTIONS)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"confusion matrix ({label})")
        high = data.max() / 2 if data.size else 0
        for (i, j), value in np.ndenumerate(data):
            color = "white" if value > high else "black"
            ax.text(j, i, format(value, fmt), ha="center", va="center", color=color, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_outputs(result: Mapping[str, Any], out_dir: Path | str) -> dict[str, Path]:
    """metrics.json, classification_report.json and confusion_matrix.png in out_dir, each atomically."""
    out = Path(out_dir)
    paths = {
        "metrics": out / "metrics.json",
        "report": out / "classification_report.json",
        "confusion": out / "confusion_matrix.png",
    }
    write_json(paths["report"], result["report"])
    plot_confusion_matrices(
        result["confusion_matrix"],
        paths["confusion"],
        title=f"{result.get('split', '')} split, n={result['n']}, accuracy {result['accuracy']:.3f}",
    )
    write_json(paths["metrics"], summary(result))
    return paths


def mlflow_metrics(result: Mapping[str, Any], prefix: str = "test_") -> dict[str, float]:
    """test_accuracy, test_macro_f1, test_n, test_tta_*, and test_f1_<emotion> per class."""
    keys = ("accuracy", "macro_f1", "n", "tta_accuracy", "tta_macro_f1")
    metrics = {f"{prefix}{k}": result.get(k) for k in keys}
    for emotion in EMOTIONS:
        if emotion in result["report"]:
            metrics[f"{prefix}f1_{emotion}"] = result["report"][emotion]["f1-score"]
    return {k: float(v) for k, v in metrics.items() if v is not None}


def held_out_training_rows(
    cfg: Any, splits: Mapping[str, tuple[np.ndarray, np.ndarray]], validated: Mapping[str, Any]
) -> tuple[str, str, np.ndarray, np.ndarray]:
    """Data with Training rows alone: the stage scores the rows the run held out to validate on, never the
    rows it fitted (an accuracy on those says nothing about new faces). (split, note, faces, labels)."""
    if validated.get("source") != "holdout":
        raise ValueError(
            "the prepared data has only training rows and the run held none out: there is nothing to "
            "evaluate on that the model did not fit. Add PublicTest/PrivateTest rows or set "
            "train.validation_holdout (e.g. 0.1) and train again"
        )
    held = validation_faces(splits, cfg.train.validation_holdout, int(cfg.seed))
    if fingerprint(held.x, held.y) != validated.get("fingerprint"):
        raise ValueError(
            "the training rows held out now differ from those the run validated on (another seed, "
            "train.validation_holdout or data): run the train stage again"
        )
    note = (
        f"no validation or test rows in the data, so the {len(held.y)} training rows the run held out "
        "(train.validation_holdout): they chose the best epoch, so this is an optimistic estimate"
    )
    return "holdout", note, held.x, held.y


def evaluate_stage(cfg: Any) -> dict[str, Any]:
    """The DVC `evaluate` stage: the trained model on the held-out prepared split, into the training run."""
    import mlflow

    from emotune import tracking
    from emotune.data import load_prepared

    train_out, out = Path(cfg.paths.train_out), Path(cfg.paths.eval_out)
    run = tracking.read_run_json(train_out / "run.json")
    splits = load_prepared(cfg.paths.prepared)
    split, note = choose_split(splits, str(cfg.evaluate.split))
    validated = run.get("validation", {})
    if split == "validation" and validated.get("source") == "holdout":
        note = (
            "no test split in the data (no PrivateTest rows), so the validation split (PublicTest), held "
            f"out: training validated on {validated['rows']} of its own rows (train.validation_holdout="
            f"{validated['fraction']:g}), so no epoch or model was chosen on these faces"
        )
    faces, labels = splits[split]
    if split == "train":
        split, note, faces, labels = held_out_training_rows(cfg, splits, validated)
    print(f"evaluate: {len(labels)} rows of the {split} split. {note}")
    result = evaluate_faces(
        load_predictor(train_out / "model.keras"), faces, labels, tta=bool(cfg.evaluate.tta)
    )
    result.update(split=split, split_note=note, synthetic=bool(cfg.data.synthetic))
    paths = write_outputs(result, out)
    with tracking.start_run(cfg, run_id=run["run_id"]):
        tracking.log_metrics(mlflow_metrics(result))
        mlflow.set_tags({"eval_split": split, "eval_split_note": note})
        tracking.log_files(list(paths.values()), artifact_path="evaluation")
    headline = summary(result)
    print({k: v for k, v in headline.items() if k != "split_note"})
    return headline
