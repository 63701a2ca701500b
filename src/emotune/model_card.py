"""The model card: what a user of models/ needs to know about the shipped model, as JSON (model_card.json)
and rendered for people (MODEL_CARD.md)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emotune.atomic import sha256_file
from emotune.data.splits import VALIDATION_SOURCES, split_label
from emotune.labels import EMOTIONS
from emotune.preprocess import FACE_SIZE
from emotune.recognizer import CARD_FILE, KERAS_FILE, ONNX_FILE

CARD_MD = "MODEL_CARD.md"
SERVING_FILES = (ONNX_FILE, KERAS_FILE, CARD_FILE, CARD_MD)  # what models/ may hold; stale ones are removed
INTENDED_USE = (
    "Choosing music for the mood a face shows, live, for a person who turned the camera on for that: a "
    "playful recommender and a teaching example of a trained, tracked and served model."
)
LIMITATIONS = (
    "It reads the expressions of faces like FER2013's, collected from web image searches: mostly adults, "
    "frontal, unevenly spread over age, skin tone and culture, with noisy labels (FER+ annotators "
    "disagree with about a third of them). Accuracy is lower for disgust and fear, for faces turned away, "
    "occluded or poorly lit, and may differ between groups of people in ways this card does not measure. An "
    "expression is not an emotion: the model sees a face, not what its owner feels. Do not use it to make "
    "decisions about people (hiring, education, policing, health, access to anything), to infer feelings "
    "of people who have not agreed to it, or as evidence of anything."
)
PREPROCESSING = (
    "emotune.preprocess: RGB frame -> grayscale (OpenCV RGB2GRAY) -> face box from the detector, grown by "
    "serve.face_margin on every side as a square and clipped to the frame -> crop -> resize to 48x48 "
    "(INTER_AREA when shrinking, INTER_LINEAR when enlarging) -> uint8 -> float32 (N, 48, 48, 1) grey levels "
    "0..255. Inside its graph the model scales by 1/255 and, as its configuration says (model.input_size, "
    "model.crop, model.channels), resizes, takes the central crop and copies grey to 3 channels. FER2013 "
    "rows are already 48x48 grey crops and take the same to_model_input step in training."
)


def build_card(
    *,
    name: str,
    precision: str,
    files: Mapping[str, Path],
    run: Any | None = None,
    registry: Mapping[str, Any] | None = None,
    export_check: Mapping[str, Any] | None = None,
    reproduce: str = "dvc exp run",
    model_info: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a user of models/ needs to know, as JSON (model_card.json; MODEL_CARD.md renders it)."""
    metrics: dict[str, dict[str, float]] = {"validation": {}, "test": {}, "training": {}}
    tags: dict[str, str] = {}
    params: dict[str, str] = {}
    if run is not None:
        tags, params = dict(run.data.tags), dict(run.data.params)
        for key, value in sorted(run.data.metrics.items()):
            group = "validation" if "val_" in key else "test" if key.startswith("test_") else "training"
            metrics[group][key] = float(value)
    return {
        "name": name,
        "labels": list(EMOTIONS),
        "input": {
            "name": "face",
            "shape": [None, FACE_SIZE, FACE_SIZE, 1],
            "dtype": "float32",
            "range": [0, 255],
            "description": "grey levels of 48x48 face crops (FER2013 format), not scaled",
        },
        "output": {
            "name": "probabilities",
            "shape": [None, len(EMOTIONS)],
            "dtype": "float32",
            "description": "softmax probabilities in `labels` order",
        },
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
        "preprocessing": PREPROCESSING,
        "model": {
            "architecture": params.get("model.name") or tags.get("model_name"),
            "onnx_precision": precision,
            **(model_info or {}),
        },
        "data": {
            "version": tags.get("data_version"),
            "source_sha256": tags.get("data_source_sha256"),
            "raw_path": params.get("data.raw_path"),
            "synthetic": tags.get("data_synthetic", params.get("data.synthetic")),
            "evaluation_split": tags.get("eval_split"),
            "evaluation_split_note": tags.get("eval_split_note"),
        },
        "metrics": metrics,
        "export_check": dict(export_check or {}),
        "calibration": dict(calibration or {}),
        "mlflow": {
            "run_id": run.info.run_id if run is not None else None,
            "experiment_id": run.info.experiment_id if run is not None else None,
            "git_commit": tags.get("git_commit"),
            **(registry or {}),
        },
        "files": {
            fname: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
            for fname, path in files.items()
            if fname in SERVING_FILES
        },
        "reproduce": reproduce,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }


def card_markdown(card: Mapping[str, Any]) -> str:
    def pct(value: Any) -> str:
        return "—" if value is None else f"{100 * float(value):.2f}%"

    val, test, check = card["metrics"]["validation"], card["metrics"]["test"], card["export_check"]
    synthetic = str(card["data"].get("synthetic")).lower() == "true"
    lines = [
        f"# Model card: {card['name']}",
        "",
        *(
            ["**Trained on SYNTHETIC data: a pipeline check, not a facial-expression model.**", ""]
            * synthetic
        ),
        "Facial-expression classifier (FER2013, 7 classes): "
        + ", ".join(f"{i} {label}" for i, label in enumerate(card["labels"]))
        + ".",
        "",
        "| | |",
        "| --- | --- |",
        f"| architecture | {card['model'].get('architecture')} |",
        f"| input | `{card['input']['name']}` float32 (N, 48, 48, 1), grey levels 0..255 |",
        f"| output | `{card['output']['name']}` float32 (N, 7) softmax probabilities |",
        f"| ONNX weights | {card['model']['onnx_precision']} |",
        "| test-time augmentation | "
        + ("horizontal flip, averaged inside the model |" if card["model"].get("flip_tta") else "none |"),
        *(
            [
                f"| networks averaged inside the model | {len(members)}, of the training runs "
                + ", ".join(f"`{m.get('run_id')}`" for m in members)
                + "; the training-run and test rows are the first one's alone, the export-check and "
                "shipped-file rows the average's |"
            ]
            if (members := card["model"].get("ensemble"))
            else []
        ),
        f"| validation accuracy (training run, {VALIDATION_SOURCES.get(check.get('split'), 'validation')}) |"
        f" {pct(val.get('best_val_accuracy'))} |",
        f"| test accuracy ({split_label(card['data'].get('evaluation_split'))}) |"
        f" {pct(test.get('test_accuracy'))} |",
        f"| test macro-F1 | {pct(test.get('test_macro_f1'))} |",
        f"| test accuracy with flip TTA (float32) | {pct(test.get('test_tta_accuracy'))} |",
        f"| export check on validation (float32 -> {card['model']['onnx_precision']}"
        f"{', both with flip TTA' if card['model'].get('flip_tta') else ''}) |"
        f" {pct(check.get('accuracy_float32'))} -> {pct(check.get('accuracy_exported'))}"
        f" ({check.get('accuracy_drop_points', '—')} points, n={check.get('n', '—')}) |",
        *(
            [
                f"| shipped file, held out ({split_label(held['split'])}) | {pct(held['accuracy_exported'])}"
                f" (n={held['n']}) |"
            ]
            if (held := check.get("held_out"))
            else []
        ),
        f"| data version (DVC) | `{card['data'].get('version')}` |",
        f"| MLflow run | `{card['mlflow'].get('run_id')}` |",
        f"| registry | {card['mlflow'].get('registered_model')} v{card['mlflow'].get('version')}"
        f" @{card['mlflow'].get('alias')} |",
        "",
        f"Evaluation split: {card['data'].get('evaluation_split_note') or '—'}",
        "",
        "## Intended use",
        "",
        card.get("intended_use") or INTENDED_USE,
        "",
        "## Limitations",
        "",
        card.get("limitations") or LIMITATIONS,
        "",
        "## Preprocessing",
        "",
        card["preprocessing"],
        "",
        "## Files",
        "",
        "| file | bytes | sha256 |",
        "| --- | --- | --- |",
        *(f"| {f} | {v['bytes']:,} | `{v['sha256']}` |" for f, v in card["files"].items()),
        "",
        "## Reproduce",
        "",
        f"    {card['reproduce']}",
        "",
        *(
            ["## Changes since promotion", "", *(f"- {c['date']}: {c['change']}" for c in changes), ""]
            if (changes := card.get("changes"))
            else []
        ),
    ]
    return "\n".join(lines)


def write_card(card: Mapping[str, Any], out_dir: Path | str) -> dict[str, Path]:
    out = Path(out_dir)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    (out / CARD_MD).write_text(card_markdown(card))
    return {CARD_FILE: out / CARD_FILE, CARD_MD: out / CARD_MD}
