"""Resumable training: a backup of the whole training state after every epoch, outside DVC's outputs.

A train stage killed at any moment (SIGKILL, preemption, power cut) and started again with the same
configuration and data continues after the last completed epoch. The backup holds every variable of the
trainer (weights, batch-norm statistics, the augmentation and dropout RNG states) and of its optimizer
(moments, step counter, hence the learning-rate schedule's position, EMA weights), the state of the
callbacks that carry some (best checkpoint, early stopping, plateau, EMA swap), the history so far, the
best epoch's model file, the training seconds spent and the MLflow run to continue.

Layout: `<root>/<key>/` where the key hashes what defines the run (the train stage's configuration and the
prepared data), so a changed configuration or data starts a fresh backup instead of resuming the old one.
Inside, `epoch-NNNN/` directories are written whole and then named by `latest.json` (replaced atomically),
so a kill during a write leaves the previous epoch's backup usable. A finished run deletes its backup.

The training code's fingerprint (a hash per source file) is stored too: resuming after the code changed
is refused unless asked for (`train.resume.allow_code_change`), and the changed files are named.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from emotune.atomic import sha256_file, write_json

# The callbacks whose attributes must survive a restart, and which attributes. Keras resets them in
# on_train_begin, so they are restored after that (the backup callback comes after them in the list).
CALLBACK_STATE: dict[type, tuple[str, ...]] = {
    keras.callbacks.EarlyStopping: ("wait", "best", "best_epoch", "stopped_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
    # Whether the EMA weights are swapped into the model at the epoch boundary where the backup is taken.
    keras.callbacks.SwapEMAWeights: ("_ema_weights_in_model",),
}
BEST_MODEL_FILE = "best_model.keras"
LATEST_FILE = "latest.json"
# What does not define the run: where and how it is backed up.
KEY_EXCLUDES = ("resume",)


class ResumeRefused(RuntimeError):
    """A backup exists for this run but must not be resumed without the user's say-so."""


def run_definition(cfg: DictConfig | Mapping[str, Any], data_files: Iterable[Path | str]) -> dict[str, Any]:
    """What defines a training run: the train stage's configuration and the hashes of its input files."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    train = {k: v for k, v in container["train"].items() if k not in KEY_EXCLUDES}
    return {
        "config": {
            "seed": container["seed"],
            "data": {k: container["data"][k] for k in ("image_size", "synthetic")},
            "model": container["model"],
            "train": train,
        },
        "data": {Path(p).name: sha256_file(Path(p)) for p in sorted(map(str, data_files))},
    }


def run_key(definition: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def code_fingerprint(package: str = "emotune", extra: Sequence[Path | str] = ()) -> dict[str, str]:
    """{file: sha256} of every loaded module of `package` and the `extra` files (the stage's script)."""
    files = {
        Path(m.__file__).resolve()
        for name, m in list(sys.modules.items())
        if (name == package or name.startswith(f"{package}.")) and getattr(m, "__file__", None)
    }
    files.update(Path(p).resolve() for p in extra)
    return {str(p): sha256_file(p) for p in sorted(files) if p.is_file()}


def changed_files(saved: Mapping[str, str]) -> list[str]:
    """The files of a saved fingerprint whose content differs now (or that are gone)."""
    changed = []
    for name, digest in saved.items():
        path = Path(name)
        if not path.is_file() or sha256_file(path) != digest:
            changed.append(name)
    return changed


@dataclass
class RestoredState:
    """What the backup of the last completed epoch holds, loaded before training starts."""

    directory: Path
    epoch: int  # completed epochs (fit's initial_epoch)
    history: list[dict[str, float]]
    run_id: str | None
    train_seconds: float
    stopped: bool  # early stopping ended the run at this epoch
    callbacks: dict[str, dict[str, Any]]
    best: dict[str, Any]
    resumes: int
    code_changed: list[str] = field(default_factory=list)


class TrainingBackup(keras.callbacks.Callback):
    """Restores the state at the start of `fit` (when resuming) and backs it up after every epoch.

    Put it after the callbacks whose state it carries (see CALLBACK_STATE) and the best-model checkpoint,
    and before anything that reports the epoch elsewhere (MLflow), so what is reported is always backed up.
    """

    def __init__(
        self,
        root: Path | str,
        definition: Mapping[str, Any],
        code: Mapping[str, str],
        *,
        epochs: int,
        allow_code_change: bool = False,
        keep: int = 1,
    ) -> None:
        super().__init__()
        self.definition = dict(definition)
        self.key = run_key(self.definition)
        self.root = Path(root)
        self.directory = self.root / self.key
        self.code = dict(code)
        self.epochs = int(epochs)
        self.keep = max(1, int(keep))
        self.run_id: str | None = None
        self.tracked: list[keras.callbacks.Callback] = []
        self.checkpoint: Any = None  # the BestModelCheckpoint whose file and score are backed up
        self.history: list[dict[str, float]] = []
        self.seconds_before = 0.0
        self._started: float | None = None
        self.restored = self._load(allow_code_change)
        if self.restored is not None:
            self.history = list(self.restored.history)
            self.run_id = self.restored.run_id
            self.seconds_before = self.restored.train_seconds

    # --- finding and loading ------------------------------------------------------------------------

    def other_backups(self) -> list[str]:
        """Backups under the root for other configurations or data (never resumed from by this run)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name != self.key)

    @property
    def initial_epoch(self) -> int:
        if self.restored is None:
            return 0
        return self.epochs if self.restored.stopped else min(self.restored.epoch, self.epochs)

    def _load(self, allow_code_change: bool) -> RestoredState | None:
        latest = self.directory / LATEST_FILE
        if not latest.is_file():
            return None
        pointer = json.loads(latest.read_text())
        state_dir = self.directory / pointer["directory"]
        meta = json.loads((state_dir / "state.json").read_text())
        if meta["definition"] != self.definition:  # a hash collision or a hand-copied folder
            raise ResumeRefused(
                f"the backup in {self.directory} was made for another configuration or data; delete it"
            )
        changed = changed_files(meta["code"])
        if changed and not allow_code_change:
            names = ", ".join(changed)
            raise ResumeRefused(
                f"the training code changed since the backup of epoch {meta['epoch']} in {self.directory} "
                f"({names}). To resume across the change, run again with "
                "train.resume.allow_code_change=true "
                "(e.g. dvc exp run -S train.resume.allow_code_change=true); "
                f"to start over, delete {self.directory}."
            )
        return RestoredState(
            directory=state_dir,
            epoch=int(meta["epoch"]),
            history=meta["history"],
            run_id=meta.get("run_id"),
            train_seconds=float(meta.get("train_seconds", 0.0)),
            stopped=bool(meta.get("stopped", False)),
            callbacks=meta.get("callbacks", {}),
            best=meta.get("best", {}),
            resumes=int(meta.get("resumes", 0)) + 1,
            code_changed=changed,
        )

    # --- wiring ---------------------------------------------------------------------------------------

    def track(self, callbacks: Sequence[keras.callbacks.Callback], checkpoint: Any) -> None:
        """The callbacks of this fit whose state to carry, and the best-model checkpoint."""
        self.tracked = [cb for cb in callbacks if type(cb) in CALLBACK_STATE]
        self.checkpoint = checkpoint

    def restore_best_model(self, export_model: keras.Model | None) -> None:
        """Put the backed-up best model back at the checkpoint's path (DVC deleted it) and into
        `export_model`, which the stage logs at the end."""
        if self.restored is None or self.checkpoint is None:
            return
        source = self.restored.directory / BEST_MODEL_FILE
        if not source.is_file():
            return
        self.checkpoint.best = float(self.restored.best.get("value", -np.inf))
        self.checkpoint.best_epoch = int(self.restored.best.get("epoch", 0))
        self.checkpoint.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.checkpoint.path)
        if export_model is not None:
            export_model.load_weights(source)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()
        if self.restored is None:
            return
        arrays = np.load(self.restored.directory / "variables.npz")
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        for prefix, variables in (("model", self.model.variables), ("optimizer", optimizer.variables)):
            for i, variable in enumerate(variables):
                variable.assign(arrays[f"{prefix}/{i}"])
        for cb in self.tracked:
            state = self.restored.callbacks.get(type(cb).__name__, {})
            for name in CALLBACK_STATE[type(cb)]:
                if name in state:
                    setattr(cb, name, _from_plain(state[name]))
            if isinstance(cb, keras.callbacks.EarlyStopping) and "early_stopping_best/0" in arrays:
                count = sum(1 for k in arrays.files if k.startswith("early_stopping_best/"))
                cb.best_weights = [arrays[f"early_stopping_best/{i}"] for i in range(count)]

    # --- saving -----------------------------------------------------------------------------------------

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history = [r for r in self.history if r["epoch"] < epoch + 1] + [record]
        self.save(epoch + 1)

    def save(self, epoch: int) -> Path:
        """Write the whole state after `epoch` completed epochs, then point latest.json at it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:04d}"
        final = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        arrays: dict[str, np.ndarray] = {}
        for i, v in enumerate(self.model.variables):
            arrays[f"model/{i}"] = keras.ops.convert_to_numpy(v)
        for i, v in enumerate(self.model.optimizer.variables):
            arrays[f"optimizer/{i}"] = keras.ops.convert_to_numpy(v)
        callbacks: dict[str, dict[str, Any]] = {}
        for cb in self.tracked:
            callbacks[type(cb).__name__] = {n: _plain(getattr(cb, n)) for n in CALLBACK_STATE[type(cb)]}
            if isinstance(cb, keras.callbacks.EarlyStopping) and cb.best_weights is not None:
                for i, w in enumerate(cb.best_weights):
                    arrays[f"early_stopping_best/{i}"] = np.asarray(w)
        np.savez(tmp / "variables.npz", **arrays)
        best: dict[str, Any] = {}
        if self.checkpoint is not None and self.checkpoint.best_epoch:
            best = {"value": self.checkpoint.best, "epoch": self.checkpoint.best_epoch}
            previous = self._previous_state_dir()
            if self.checkpoint.best_epoch == epoch or previous is None:
                shutil.copyfile(self.checkpoint.path, tmp / BEST_MODEL_FILE)
            else:  # unchanged since the last backup: a hard link, not another copy
                _link_or_copy(previous / BEST_MODEL_FILE, tmp / BEST_MODEL_FILE)
        elapsed = self.seconds_before + self.seconds_this_process()
        write_json(
            tmp / "state.json",
            {
                "epoch": epoch,
                "epochs": self.epochs,
                "stopped": bool(self.model.stop_training),
                "history": self.history,
                "run_id": self.run_id,
                "train_seconds": elapsed,
                "callbacks": callbacks,
                "best": best,
                "resumes": self.restored.resumes if self.restored else 0,
                "definition": self.definition,
                "code": self.code,
            },
        )
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        write_json(self.directory / LATEST_FILE, {"directory": name, "epoch": epoch})
        self._prune(keep={name})
        return final

    def _previous_state_dir(self) -> Path | None:
        latest = self.directory / LATEST_FILE
        if not latest.is_file():
            return None
        path = self.directory / json.loads(latest.read_text())["directory"]
        return path if (path / BEST_MODEL_FILE).is_file() else None

    def _prune(self, keep: set[str]) -> None:
        states = sorted(p for p in self.directory.glob("epoch-*") if p.is_dir())
        for path in states[: max(0, len(states) - self.keep)]:
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    # --- timing and the end -----------------------------------------------------------------------------

    def seconds_this_process(self) -> float:
        return 0.0 if self._started is None else time.perf_counter() - self._started

    def remove(self) -> None:
        """The run finished: its backup has done its job."""
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()


def _plain(value: Any) -> Any:
    """Callback attributes as JSON values (NumPy scalars and infinities included)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return "inf" if value > 0 else "-inf"
    return value


def _from_plain(value: Any) -> Any:
    return float(value) if value in ("inf", "-inf") else value


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)
