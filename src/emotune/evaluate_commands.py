"""`emotune evaluate`: any saved model on any FER2013-format data (Kaggle CSV or image folders).

The file goes through the data engineer's validating loader (emotune.data.fer2013.load) and the faces through
the same preprocessing as training and serving; the metrics are those of the evaluate stage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_MODELS = ("artifacts/train/model.keras", "models/emotune.onnx", "models/model.keras")
# Kaggle's Usage names are accepted as well as the pipeline's split names.
SPLIT_ALIASES = {"training": "train", "publictest": "validation", "privatetest": "test"}
FILE_NOTES = {
    "test": "the PrivateTest rows of the data",
    "validation": "no PrivateTest rows in the data, so its PublicTest rows",
    "train": "only Training rows in the data: not held-out faces if the model was trained on them",
}


def default_model() -> Path:
    """The freshly trained model when there is one, else the promoted one."""
    for candidate in DEFAULT_MODELS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        f"no model found at {', '.join(DEFAULT_MODELS)}: train one (dvc repro) or pass --model PATH"
    )


def select_rows(splits: dict[str, Any], requested: str) -> tuple[Any, Any, str, str]:
    """(faces, labels, split, note) for `requested`: auto | all | train | validation | test | a Usage."""
    import numpy as np

    from emotune.data.splits import SPLIT_NOTES, choose_split

    if requested == "all":
        faces = np.concatenate([x for x, _ in splits.values()])
        labels = np.concatenate([y for _, y in splits.values()])
        return faces, labels, "all", SPLIT_NOTES["all"]
    split, note = choose_split(splits, SPLIT_ALIASES.get(requested.lower(), requested), FILE_NOTES)
    return *splits[split], split, note


def evaluate_command(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from emotune.data.fer2013 import load
    from emotune.evaluation import evaluate_faces, load_predictor, summary, write_outputs

    try:
        model_path = Path(args.model) if args.model else default_model()
        if not model_path.is_file():
            raise FileNotFoundError(f"model file {model_path} not found")
        data = load(args.data, progress=not args.json)
        faces, labels, split, note = select_rows(data.splits(), args.split)
        predictor = load_predictor(model_path, batch_size=args.batch_size)
    except (OSError, ValueError) as err:  # missing files, bad rows (with line numbers), unknown split
        print(f"emotune evaluate: error: {err}", file=sys.stderr)
        return 2
    result = evaluate_faces(predictor, faces, labels, tta=args.tta)
    result.update(split=split, split_note=note, model=str(model_path), data=str(args.data))
    if args.out:
        write_outputs(result, args.out)
    headline = {**summary(result), "model": str(model_path), "data": str(args.data)}
    if args.json:
        print(json.dumps(headline, indent=2))
        return 0
    print(f"model: {model_path}\ndata:  {args.data} ({split}: {note})")
    print(f"n = {result['n']}   accuracy = {result['accuracy']:.4f}   macro-F1 = {result['macro_f1']:.4f}")
    if args.tta:
        tta_acc, tta_f1 = result["tta_accuracy"], result["tta_macro_f1"]
        print(f"with flip TTA: accuracy = {tta_acc:.4f}   macro-F1 = {tta_f1:.4f}")
    print(f"\n{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name, row in result["report"].items():
        if isinstance(row, dict):
            print(
                f"{name:<10}{row['precision']:>10.3f}{row['recall']:>10.3f}"
                f"{row['f1-score']:>10.3f}{int(row['support']):>10d}"
            )
    return 0


def register(sub: Any) -> None:
    from emotune.cli_types import POSITIVE

    p = sub.add_parser(
        "evaluate",
        help="evaluate a saved model on FER2013-format data",
        description="Accuracy, macro-F1 and per-class precision/recall/F1 of a saved model (.keras or .onnx) "
        "on a FER2013 CSV (plain or .gz) or a Kaggle image-folder tree.",
    )
    p.add_argument("--data", required=True, help="FER2013 CSV (emotion,pixels,Usage) or image folder root")
    p.add_argument("--model", help=f"model file (default: the first of {', '.join(DEFAULT_MODELS)})")
    p.add_argument(
        "--split",
        default="auto",
        help="auto (PrivateTest if present, else PublicTest, else Training) | all | "
        "train | validation | test (or Training | PublicTest | PrivateTest)",
    )
    p.add_argument("--tta", action="store_true", help="also report horizontal-flip test-time augmentation")
    p.add_argument("--batch-size", type=POSITIVE, default=256)
    p.add_argument("--out", help="also write metrics.json, classification_report.json and the plot here")
    p.add_argument("--json", action="store_true", help="print the headline metrics as JSON")
    p.set_defaults(func=evaluate_command)
