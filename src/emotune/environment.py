"""The two installs. The light one (`make serve`: the package's own dependencies) serves ONNX models: the
service, the page, `emotune analyze|recommend|serve|ui`. The full one (`make env-full`: + the `train` and
`dev` dependency groups of pyproject.toml) adds training, evaluation, promotion, data download and the tests.
"""

from __future__ import annotations

FULL_ENV_COMMAND = "make env-full"

# Top-level modules that only the full environment installs (the `train` group and what it pulls in).
FULL_ONLY_MODULES = frozenset(
    {"tensorflow", "keras", "dvc", "mlflow", "sklearn", "matplotlib", "tf2onnx", "onnx", "kagglehub"}
    | {"spotipy", "requests"}  # requests: spotipy's HTTP client, which emotune.music.spotify imports first
)


class FullEnvironmentRequired(RuntimeError):
    """What was asked for runs only in the full environment; the message is one line that says so."""


def missing_full_module(err: BaseException) -> str | None:
    """The module's name when `err` says a module of the full environment is not installed, else None."""
    name = err.name if isinstance(err, ModuleNotFoundError) else None
    return name if name and name.split(".")[0] in FULL_ONLY_MODULES else None


def needs_full_environment(what: str, module: str) -> str:
    """The one line that says so: 'emotune evaluate: needs the full environment (no module sklearn): ...'."""
    return f"{what}: needs the full environment (no module {module}): {FULL_ENV_COMMAND}"
