"""Nobody in by default: the page and the API bind to localhost unless exposing them is asked for, and no
credential (AWS, Kaggle, Spotify, private keys, tokens) is in the files git holds or is about to hold."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.pipeline import repository_files

from emotune.config import REPO_ROOT, compose
from emotune.serving import serve_settings

LOCALHOST = "127.0.0.1"

# --- binding ---------------------------------------------------------------------------------------------


def test_page_and_api_default_to_localhost(repo_root):
    cfg = compose([])
    assert cfg.serve.host == LOCALHOST and cfg.ui.host == LOCALHOST
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert params["serve"]["host"] == LOCALHOST and params["ui"]["host"] == LOCALHOST
    # Nothing that starts the service sets another address behind the user's back.
    bentofile = yaml.safe_load((repo_root / "bentofile.yaml").read_text())
    assert "EMOTUNE_HOST" not in {e["name"] for e in bentofile.get("envs", [])}
    for name in ("Makefile", ".ci/run", "bentofile.yaml"):
        code = [
            line for line in (repo_root / name).read_text().splitlines() if not line.lstrip().startswith("#")
        ]
        assert not [line for line in code if "0.0.0.0" in line], name


def test_exposing_is_an_explicit_option(monkeypatch):
    monkeypatch.delenv("EMOTUNE_HOST", raising=False)
    assert serve_settings().serve.host == LOCALHOST
    monkeypatch.setenv("EMOTUNE_HOST", "0.0.0.0")
    assert serve_settings().serve.host == "0.0.0.0"
    help_text = subprocess.run(
        [str(Path(sys.executable).parent / "emotune"), "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    ).stdout
    assert "--host" in help_text and LOCALHOST in help_text


# --- secrets ---------------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+=]{40}"),
    "Kaggle API key (kaggle.json)": re.compile(r"\"key\"\s*:\s*\"[0-9a-f]{32}\""),
    "Kaggle API key (environment)": re.compile(r"KAGGLE_KEY\s*[=:]\s*['\"]?[0-9a-f]{32}"),
    "Kaggle API token": re.compile(r"KAGGLE_API_TOKEN\s*[=:]\s*['\"]?[A-Za-z0-9_-]{20,}"),
    "Spotify client secret": re.compile(
        r"(?i)(?:spotipy_client_secret|spotify_client_secret|client_secret)\s*[=:]\s*['\"]?[0-9a-f]{32}"
    ),
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
}
SECRET_FILES = re.compile(r"(?:^|/)(?:kaggle\.json|\.env|id_rsa|id_ed25519|[^/]*\.pem|credentials\.json)$")


def find_secrets(root: Path, names: list[str]) -> list[tuple[str, int, str]]:
    """(file, line, kind) for every credential-looking line and every file named like a credential file."""
    found = []
    for name in names:
        if SECRET_FILES.search(name):
            found.append((name, 0, "credential file"))
        with open(root / name, "rb") as f:
            head = f.read(8192)
            if b"\0" in head:  # binary (model weights, images): not where a pasted key lives
                continue
            data = head + f.read()
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            found += [
                (name, number, kind) for kind, pattern in SECRET_PATTERNS.items() if pattern.search(line)
            ]
    return found


def test_no_credentials_in_the_repository(repo_root):
    names = repository_files(repo_root)
    assert len(names) > 20 and "pyproject.toml" in names  # the scan really looked at the repository
    assert find_secrets(repo_root, names) == []


# Fakes assembled at run time, so that this file itself holds none of them.
HEX32 = "0123456789abcdef" * 2
PLANTED = {
    "settings.py": ("AWS_ACCESS_KEY_ID = 'AKIA" + "Q" * 16 + "'", "AWS access key id"),
    "deploy.cfg": ("aws_secret_access_key = " + "a1B2/c3D4+" * 4, "AWS secret access key"),
    "notes/kaggle-copy.txt": (
        '{"username": "someone", "key": "' + HEX32 + '"}',
        "Kaggle API key (kaggle.json)",
    ),
    "run.sh": ("export KAGGLE_KEY=" + HEX32, "Kaggle API key (environment)"),
    "spotify.env.example": ("SPOTIPY_CLIENT_SECRET=" + HEX32, "Spotify client secret"),
    "conf/music/spotify.yaml": ("client_secret: '" + HEX32 + "'", "Spotify client secret"),
    "keys/server.txt": ("-----BEGIN RSA " + "PRIVATE KEY-----\nMIIE...", "private key"),
    "ci.yml": ("token: gh" + "p_" + "A1b2C3d4" * 5, "GitHub token"),
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_the_scan_finds_a_planted_credential(tmp_path, name):
    line, kind = PLANTED[name]
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(f"# config\n{line}\n")
    (tmp_path / "clean.py").write_text("KEY = os.environ['KAGGLE_KEY']  # from the environment only\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    found = find_secrets(tmp_path, repository_files(tmp_path))
    assert (name, 2, kind) in found and not [f for f in found if f[0] == "clean.py"]


def test_the_scan_flags_credential_files_and_git_ignores_them(tmp_path, repo_root):
    (tmp_path / "kaggle.json").write_text("{}")
    (tmp_path / ".env").write_text("NOTHING=1\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    found = find_secrets(tmp_path, repository_files(tmp_path))
    assert {(n, k) for n, _, k in found} == {("kaggle.json", "credential file"), (".env", "credential file")}
    # In this repository, .gitignore keeps them out of `git add -A` in the first place.
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "kaggle.json", ".env", "secrets/server.pem"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == ["kaggle.json", ".env", "secrets/server.pem"]
