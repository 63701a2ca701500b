"""Configuration: Hydra composes `conf/`; DVC stages read the composed `params.yaml`.

`dvc exp run -S key=value` composes conf/ (+ overrides) into params.yaml itself (hydra.enabled). Plain
`dvc repro` reads params.yaml as committed, so `make params` regenerates it from conf/ and a test keeps
the two identical. Stages never read conf/ directly: what DVC tracks is exactly what they run with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
PARAMS_FILE = "params.yaml"


def compose(overrides: Sequence[str] = (), conf_dir: Path | str = CONF_DIR) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides (e.g. ["experiment=smoke", "train.epochs=3"])."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def to_yaml(cfg: DictConfig) -> str:
    return yaml.safe_dump(OmegaConf.to_container(cfg, resolve=True), sort_keys=False)


def load_params(path: Path | str = PARAMS_FILE) -> DictConfig:
    """The configuration a DVC stage runs with."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `make params` (emotune config compose --out {path})")
    return OmegaConf.create(yaml.safe_load(path.read_text()))


def flatten(cfg: DictConfig | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train.epochs": 30, ...}: the form MLflow params take."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _compose_command(args: Any) -> int:
    text = to_yaml(compose(args.overrides))
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


def register(sub: Any) -> None:
    config = sub.add_parser("config", help="compose conf/ (Hydra) into params.yaml").add_subparsers(
        dest="config_command", required=True
    )
    p = config.add_parser("compose", help="print (or write) the composed configuration")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=smoke train.epochs=3")
    p.add_argument("--out", help="write here (e.g. params.yaml) instead of printing")
    p.set_defaults(func=_compose_command)
