"""Train the pipeline's recipe on a machine with PyTorch and no TensorFlow (a GPU box that may have no
network and take only a small upload), then bring the run back into the pipeline.

1. `pack` (here, in the pipeline's environment): the training and validation faces that params.yaml selects
   (PNG-coded: lossless uint8, about 51 MB for FER2013's Training rows), their targets, the resolved
   configuration, what defines the run (emotune.resume.run_definition) and the few emotune modules the
   trainer imports, in one folder. The test faces never leave.
2. `python BUNDLE/train.py --out DIR` (there: Python 3.11+, PyTorch, Keras 3): the same Keras model,
   optimiser, schedule, loss and best-epoch checkpoint (emotune.training.fit) on Keras' torch backend, with
   the augmentation done on the accelerator in PyTorch: Keras' augmentation layers cost more than the
   network per step on that backend. With `--budget-minutes` it first times one epoch, then fits the
   schedule to the epochs the budget holds.
3. `import_run` (here): refuses a run that trained something other than what params.yaml and the prepared
   data define now, else logs it to MLflow like any train stage run and writes the train stage's outputs, so
   `dvc commit train` records them and `dvc repro` evaluates and promotes the model.

Only NumPy, OpenCV and the standard library at module level: this file runs on both machines.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

BUNDLE_FILE = "bundle.json"
FACES_FILE = "faces.npz"
RUN_FILE = "gpu_run.json"  # written last by the trainer: its presence means the run finished
# What the trainer imports of emotune (tests/integration/test_portable_pipeline.py runs it with nothing else).
CODE_MODULES = ("__init__.py", "atomic.py", "labels.py", "model.py", "training.py", "portable.py")
# Keras 3 and what it needs beyond what GPU images usually carry (NumPy, h5py, ml-dtypes, rich, absl-py).
KERAS_WHEELS = ("keras", "namex", "optree")
LAUNCHER = '''"""Train this emotune bundle: python train.py --out DIR [--budget-minutes M]."""
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import keras  # noqa: F401
except ImportError:
    wheels = sorted(str(p) for p in (HERE / "wheels").glob("*.whl"))
    if not wheels:
        sys.exit("Keras 3 is not installed here: pip install keras, or pack with --wheels-for")
    site = HERE / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                    str(site), *wheels], check=True)
    sys.path.insert(0, str(site))
sys.path.insert(0, str(HERE / "code"))
from emotune.portable import main  # noqa: E402

sys.exit(main(HERE))
'''


class ImportRefused(RuntimeError):
    """A trained run does not match what the pipeline's configuration and data define now."""


# --- Faces as PNG: lossless and about a fifth smaller than zlib on the raw arrays ------------------------


def encode_faces(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 faces (N, S, S) -> (all PNG bytes concatenated, N + 1 offsets into them)."""
    coded = [cv2.imencode(".png", face, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1] for face in faces]
    offsets = np.zeros(len(coded) + 1, np.int64)
    offsets[1:] = np.cumsum([len(c) for c in coded])
    return (np.concatenate(coded) if coded else np.zeros(0, np.uint8)), offsets


def decode_faces(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    faces = [
        cv2.imdecode(data[offsets[i] : offsets[i + 1]], cv2.IMREAD_GRAYSCALE) for i in range(len(offsets) - 1)
    ]
    if any(face is None for face in faces):
        raise ValueError("the bundle's faces are damaged (a PNG does not decode): pack it again")
    return np.stack(faces)


# --- 1. pack (the pipeline's machine) -------------------------------------------------------------------


def pack(cfg: Any, out: Path | str, wheels_for: str | None = None) -> dict[str, Any]:
    """Write the bundle for `cfg` (the composed params.yaml) to the folder `out`; returns its bundle.json.

    `wheels_for` ("3.12"): also download Keras' wheels for that Python (manylinux x86-64) into wheels/,
    for a machine that has PyTorch but no Keras and no network.
    """
    from omegaconf import OmegaConf

    from emotune.atomic import write_json
    from emotune.resume import run_definition, run_key
    from emotune.training import training_data

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: choose a new folder for the bundle")
    data = training_data(cfg)
    definition = run_definition(cfg, data.data_files)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would keep the bundle from whoever runs it on the other machine
    try:
        train_png, train_offsets = encode_faces(data.x_train)
        val_png, val_offsets = encode_faces(data.x_val)
        np.savez(
            staging / FACES_FILE,
            train_png=train_png,
            train_offsets=train_offsets,
            targets=data.targets.astype(np.float32),
            val_png=val_png,
            val_offsets=val_offsets,
            val_labels=data.y_val.astype(np.uint8),
        )
        code = staging / "code" / "emotune"
        code.mkdir(parents=True)
        package = Path(__file__).resolve().parent
        for name in CODE_MODULES:
            shutil.copy2(package / name, code / name)
        (staging / "train.py").write_text(LAUNCHER)
        if wheels_for:
            download_keras_wheels(wheels_for, staging / "wheels")
        container = OmegaConf.to_container(cfg, resolve=True)
        info = {
            "key": run_key(definition),
            "definition": definition,
            "config": {k: container[k] for k in ("seed", "data", "model", "train")},
            "validation": data.validation,
            "rows": {"train": len(data.x_train), "validation": len(data.x_val)},
            "keras_version": metadata.version("keras"),
            "packed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(staging / BUNDLE_FILE, info)
        if out.exists():
            out.rmdir()
        staging.rename(out)  # whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def download_keras_wheels(python_version: str, dest: Path) -> None:
    """The installed Keras and its two less common needs, as wheels for `python_version` on Linux x86-64."""
    pins = [f"{name}=={metadata.version(name)}" for name in KERAS_WHEELS]
    platforms = [
        arg
        for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
        for arg in ("--platform", tag)
    ]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", python_version, "--implementation", "cp", *platforms, "-d", str(dest), *pins]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        raise RuntimeError(
            f"could not download {', '.join(pins)} for Python {python_version} ({tail[0]}); without a "
            "network, install Keras on the GPU machine (pip install keras) and pack without --wheels-for"
        )


# --- 2. train (the GPU machine) -------------------------------------------------------------------------


def augment(faces: Any, aug_cfg: Mapping[str, Any], generator: Any) -> Any:
    """Random flips, rotations, shifts, zoom, brightness and contrast of float grey faces (B, S, S) on their
    device, with the meaning of emotune.training.make_augmenter's Keras layers (fractions of a turn, of
    the side, zoom factor ranges, brightness as a fraction of 255, contrast factor around each face's mean).
    """
    import torch
    import torch.nn.functional as F

    if not aug_cfg.get("enabled", True):
        return faces
    n, device = faces.shape[0], faces.device

    def uniform(low: float, high: float) -> Any:
        return torch.rand(n, device=device, generator=generator) * (high - low) + low

    x = faces
    if aug_cfg.get("flip", True):
        flip = torch.rand(n, device=device, generator=generator) < 0.5
        x = torch.where(flip[:, None, None], x.flip(-1), x)
    rotate, shift, zoom = (float(aug_cfg.get(k) or 0) for k in ("rotate", "translate", "zoom"))
    if rotate or shift or zoom:
        angle = uniform(-rotate, rotate) * 2 * math.pi
        scale = 1 + uniform(-zoom, zoom)  # >1 samples a larger area: the face shrinks (zooms out)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        # affine_grid's coordinates run -1..1 across the image: a shift of t of the side is 2t
        theta = torch.stack(
            [
                torch.stack([cos, -sin, 2 * uniform(-shift, shift)], -1),
                torch.stack([sin, cos, 2 * uniform(-shift, shift)], -1),
            ],
            1,
        )
        grid = F.affine_grid(theta, [n, 1, *x.shape[1:]], align_corners=False)
        # border padding repeats the edge pixels: Keras' fill_mode="nearest"
        x = F.grid_sample(x[:, None], grid, padding_mode="border", align_corners=False)[:, 0]
    brightness = float(aug_cfg.get("brightness") or 0)
    if brightness:
        x = x + uniform(-brightness, brightness)[:, None, None] * 255
    contrast = float(aug_cfg.get("contrast") or 0)
    if contrast:
        mean = x.mean(dim=(1, 2), keepdim=True)
        x = (x - mean) * uniform(1 - contrast, 1 + contrast)[:, None, None] + mean
    return x.clamp(0, 255)


def device_batches(
    faces: Any, targets: Any, batch_size: int, seed: int, aug_cfg: Mapping[str, Any] | None
) -> Any:
    """A keras.utils.PyDataset of (faces (B, S, S, 1) float32 0..255, targets) that lives on the faces'
    device: each epoch a fresh permutation from (seed, epoch) alone, cut into full batches, augmented there
    when `aug_cfg` is given (training); in order and every row once without it (validation)."""
    import keras
    import torch

    class DeviceBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            n = faces.shape[0]
            self.batch = min(int(batch_size), n)
            self.steps = n // self.batch if aug_cfg is not None else math.ceil(n / self.batch)
            self.epoch = 0
            self.generator = torch.Generator(device=faces.device).manual_seed(int(seed))
            self.order = self.permutation()

        def permutation(self) -> Any:
            n = faces.shape[0]
            if aug_cfg is None:
                return torch.arange(n, device=faces.device)
            rng = torch.Generator().manual_seed(int(seed) * 1_000_003 + self.epoch)
            return torch.randperm(n, generator=rng).to(faces.device)

        def __len__(self) -> int:
            return self.steps

        def __getitem__(self, index: int) -> tuple[Any, Any]:
            rows = self.order[index * self.batch : (index + 1) * self.batch]
            x = faces[rows].float()
            if aug_cfg is not None:
                x = augment(x, aug_cfg, self.generator)
            return x[..., None], targets[rows]

        def on_epoch_end(self) -> None:
            if aug_cfg is not None:
                self.epoch += 1
                self.order = self.permutation()

    return DeviceBatches()


def accelerator_precision(setting: str, device: Any) -> str:
    """train.precision=auto -> mixed_bfloat16 on a GPU that has it, float32 elsewhere."""
    if setting != "auto":
        return setting
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "mixed_bfloat16"
    return "float32"


def train_bundle(
    bundle: Path | str,
    out: Path | str,
    *,
    budget_minutes: float | None = None,
    device: str | None = None,
    verbose: int | str = 2,
) -> dict[str, Any]:
    """Train the bundle's recipe on Keras' torch backend; writes model.keras (the best epoch by validation
    accuracy, float32), history.json, metrics.json and, last, gpu_run.json to `out`."""
    import keras
    import torch

    from emotune import training
    from emotune.atomic import write_json
    from emotune.labels import NUM_CLASSES
    from emotune.model import build_model

    if keras.backend.backend() != "torch":
        raise RuntimeError("emotune.portable trains on Keras' torch backend: set KERAS_BACKEND=torch")
    bundle, out = Path(bundle), Path(out)
    info = json.loads((bundle / BUNDLE_FILE).read_text())
    cfg = info["config"]
    train_cfg, seed = dict(cfg["train"]), int(cfg["seed"])
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one static batch shape: autotuning pays off
    arrays = np.load(bundle / FACES_FILE)
    x_train = torch.from_numpy(decode_faces(arrays["train_png"], arrays["train_offsets"])).to(dev)
    t_train = torch.from_numpy(arrays["targets"]).to(dev)
    x_val = torch.from_numpy(decode_faces(arrays["val_png"], arrays["val_offsets"])).to(dev)
    y_val = torch.from_numpy(np.eye(NUM_CLASSES, dtype=np.float32)[arrays["val_labels"]]).to(dev)
    precision = accelerator_precision(str(train_cfg.get("precision", "auto")), dev)
    batch_size = int(train_cfg["batch_size"])
    image_size = int(cfg["data"]["image_size"])
    aug_cfg = dict(train_cfg.get("augment") or {})

    def build() -> Any:
        return build_model(cfg["model"], image_size=image_size)

    def run(epochs: int, folder: Path) -> dict[str, Any]:
        keras.utils.set_random_seed(seed)
        run_cfg = {**train_cfg, "epochs": epochs}
        batches = device_batches(x_train, t_train, batch_size, seed, aug_cfg)
        with training.precision_policy(precision):
            model = build()
            # the augmentation is done by `batches`, on the device: none inside the Keras graph
            plain = {**run_cfg, "augment": {"enabled": False}}
            trainer = training.training_model(model, plain, batches.steps)
        return training.fit(
            trainer,
            model,
            batches,
            device_batches(x_val, y_val, batch_size, seed, None),
            run_cfg,
            folder / "model.keras",
            export_model=training.float32_twin(build),
            verbose=verbose,
            steps_per_epoch=batches.steps,
        ) | {"steps": batches.steps}

    epochs_planned = int(train_cfg["epochs"])
    epochs, timed_seconds = epochs_planned, None
    if budget_minutes is not None:
        with tempfile.TemporaryDirectory() as scratch:
            timed_seconds = run(1, Path(scratch))["train_seconds"]
        epochs = epochs_within_budget(epochs_planned, budget_minutes * 60, timed_seconds)
        if epochs < 1:
            raise RuntimeError(
                f"one epoch took {timed_seconds:.0f} s on {device_name(dev)}: a budget of {budget_minutes} "
                "minutes holds none after the timing epoch"
            )
        print(
            f"gpu: one epoch takes {timed_seconds:.1f} s on {device_name(dev)}; "
            f"training {epochs} of {epochs_planned} epochs in the {budget_minutes} minute budget",
            flush=True,
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).unlink(missing_ok=True)
    result = run(epochs, out)
    synthetic = bool(cfg["data"]["synthetic"])
    metrics = training.run_metrics(result, precision, synthetic, result["steps"] * batch_size)
    write_json(out / "history.json", result["history"])
    write_json(out / "metrics.json", metrics)
    definition = json.loads(json.dumps(info["definition"]))
    definition["config"]["train"]["epochs"] = epochs
    write_json(
        out / RUN_FILE,
        {
            "bundle_key": info["key"],
            "definition": definition,
            "device": device_name(dev),
            "backend": f"keras {keras.__version__} on torch {torch.__version__}",
            "epochs_planned": epochs_planned,
            "budget_minutes": budget_minutes,
            "timed_epoch_seconds": timed_seconds,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    print(f"gpu: best val_accuracy {metrics['best_val_accuracy']:.4f} at epoch {metrics['best_epoch']}")
    return metrics


def epochs_within_budget(planned: int, budget_seconds: float, epoch_seconds: float) -> int:
    """How many of the `planned` epochs fit in what the budget leaves after the timing epoch (0: none)."""
    left = budget_seconds - epoch_seconds
    return max(0, min(planned, int(left // max(epoch_seconds, 1e-9))))


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({os.cpu_count()} cores)"


def main(bundle: Path, argv: Sequence[str] | None = None) -> int:
    """The bundle's train.py."""
    parser = argparse.ArgumentParser(prog="train.py", description="Train this emotune bundle.")
    parser.add_argument("--out", type=Path, required=True, help="folder for the model and its run record")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        help="time one epoch first, then train as many of the configured epochs as fit (schedule included)",
    )
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    args = parser.parse_args(argv)
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")
    sys.stdout.reconfigure(line_buffering=True)
    train_bundle(bundle, args.out, budget_minutes=args.budget_minutes, device=args.device)
    return 0


# --- 3. import (the pipeline's machine) -----------------------------------------------------------------


def differences(expected: Any, actual: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        keys = sorted(set(expected) | set(actual))
        return [d for k in keys for d in differences(expected.get(k), actual.get(k), f"{prefix}{k}.")]
    return [] if expected == actual else [prefix.rstrip(".")]


def import_run(cfg: Any, run_dir: Path | str, out_dir: Path | str | None = None) -> dict[str, Any]:
    """Check a trained run folder against `cfg` and the prepared data, log it to MLflow as a new run and
    write the train stage's outputs (model.keras, history.json, metrics.json, curves, run.json)."""
    import keras

    from emotune import tracking
    from emotune.atomic import atomic_output, write_json
    from emotune.resume import run_definition
    from emotune.training import training_data, write_run_outputs

    run_dir = Path(run_dir)
    record_path = run_dir / RUN_FILE
    if not record_path.is_file():
        raise ImportRefused(f"{run_dir} holds no finished run ({RUN_FILE} is written last by train.py)")
    record = json.loads(record_path.read_text())
    data = training_data(cfg)
    changed = differences(run_definition(cfg, data.data_files), record["definition"])
    if changed:
        raise ImportRefused(
            "the run trained something else than params.yaml and the prepared data define now; differing: "
            + ", ".join(changed)
            + ". Set the configuration the run used (conf/, then `make params`) or train a new bundle."
        )
    model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    history = json.loads((run_dir / "history.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out = Path(out_dir or cfg.paths.train_out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").unlink(missing_ok=True)  # the stage is unfinished until run.json is back
    with atomic_output(out / "model.keras") as tmp:
        shutil.copyfile(run_dir / "model.keras", tmp)
    write_run_outputs(out, history, metrics)
    with tracking.start_run(cfg) as run:
        tracking.log_run_start(cfg, data.report, len(data.x_train), data.validation)
        tracking.set_tags({"trained_on": record["device"], "backend": record["backend"]})
        for epoch in history:
            tracking.log_metrics({k: v for k, v in epoch.items() if k != "epoch"}, step=int(epoch["epoch"]))
        tracking.log_files([record_path])
        run_info = tracking.log_run_end(cfg, run, out, metrics, model, data.validation)
    write_json(out / "run.json", run_info)
    return run_info
