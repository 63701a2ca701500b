"""`emotune gpu pack` and `emotune gpu import`: training on a GPU machine without TensorFlow."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def folder_megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def pack_command(args: argparse.Namespace) -> int:
    from emotune.config import load_params
    from emotune.portable import pack

    try:
        info = pack(load_params(args.params), args.out, wheels_for=args.wheels_for)
    except (FileNotFoundError, FileExistsError) as err:  # no params.yaml or prepared data; --out not empty
        print(f"gpu pack: {err}", file=sys.stderr)
        return 2
    rows = info["rows"]
    print(
        f"gpu pack: {args.out} ({folder_megabytes(args.out):.1f} MB): {rows['train']} training and "
        f"{rows['validation']} validation faces, run key {info['key']}\n"
        f"then, on the GPU machine: python {args.out / 'train.py'} --out RUN_DIR [--budget-minutes M]\n"
        f"and back here: emotune gpu import RUN_DIR && dvc commit -f train && dvc repro"
    )
    return 0


def import_command(args: argparse.Namespace) -> int:
    from emotune.config import load_params
    from emotune.portable import ImportRefused, import_run

    try:
        info = import_run(load_params(args.params), args.run_dir)
    except (ImportRefused, FileNotFoundError) as err:
        print(f"gpu import: {err}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    print("gpu import: the train stage's outputs are in place: `dvc commit -f train`, then `dvc repro`")
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser(
        "gpu",
        help="train on a GPU machine with PyTorch and no TensorFlow",
        description="Pack the training faces and recipe for a GPU machine (PyTorch + Keras, no TensorFlow, "
        "no network needed), and import the run it trains back into MLflow and the pipeline.",
    )
    commands = group.add_subparsers(dest="gpu_command", required=True, metavar="COMMAND")
    p = commands.add_parser("pack", help="write the bundle a GPU machine trains from")
    p.add_argument("--out", type=Path, required=True, help="new folder for the bundle")
    p.add_argument("--params", default="params.yaml", help="composed configuration (default: params.yaml)")
    p.add_argument(
        "--wheels-for",
        metavar="PYTHON",
        help="also bundle Keras' wheels for this Python version (e.g. 3.12) for a machine without Keras",
    )
    p.set_defaults(func=pack_command)
    p = commands.add_parser("import", help="log a trained run to MLflow and write the train stage's outputs")
    p.add_argument("run_dir", type=Path, help="the folder train.py wrote (--out)")
    p.add_argument("--params", default="params.yaml", help="composed configuration (default: params.yaml)")
    p.set_defaults(func=import_command)
