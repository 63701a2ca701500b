"""The DVC pipeline under faults, on the shared smoke pipeline (tests/helpers/pipeline.py: one real
`dvc repro` in a repository copy, no second training): a stage killed half-way, `dvc repro` killed half-way,
bad raw data, a no-op second `dvc repro`, and a config change that reruns exactly the stages depending on it.

Every test leaves the copy as it found it (same outputs, `dvc status` clean), for the modules that follow.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from emotune.config import REPO_ROOT
from emotune.data import synthesize

pytestmark = pytest.mark.slow

STAGES = ("prepare", "train", "evaluate", "promote")


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def stale(pipeline) -> dict:
    """`dvc status` of the pipeline's stages as JSON ({} when everything is up to date)."""
    return json.loads(pipeline.run("dvc", "status", "--json", *STAGES).stdout or "{}")


def repro(pipeline, *args: str) -> str:
    """`dvc repro ARGS`; its whole output (DVC reports stages on stdout, the stage commands on stderr)."""
    done = pipeline.run("dvc", "repro", *args, timeout=600)
    return done.stdout + done.stderr


def ran(log: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in log]


@pytest.fixture(scope="module")
def pipeline(smoke_pipeline):
    """The smoke pipeline with every stage reproduced (promote too, unless an earlier module did it)."""
    repro(smoke_pipeline)
    assert stale(smoke_pipeline) == {}
    return smoke_pipeline


@pytest.fixture(scope="module")
def prepared(pipeline) -> Path:
    return pipeline.path(yaml.safe_load(pipeline.path("params.yaml").read_text())["paths"]["prepared"])


def test_dvc_repro_twice_the_second_run_does_nothing(pipeline):
    log = repro(pipeline)
    assert ran(log) == [] and "Data and pipelines are up to date." in log, log
    assert all(f"Stage '{s}' didn't change, skipping" in log for s in STAGES), log


def test_a_config_change_reruns_exactly_the_stages_that_depend_on_it(pipeline):
    """evaluate.tta: evaluate reruns (prepare and train do not), and its changed metrics make promote, the one
    stage downstream of it, out of date."""
    saved = {name: pipeline.path(name).read_bytes() for name in ("params.yaml", "dvc.lock")}
    evaluate_out = pipeline.path("artifacts/evaluate")
    saved_outputs = {p.name: p.read_bytes() for p in evaluate_out.iterdir()}
    params = yaml.safe_load(saved["params.yaml"])
    params["evaluate"]["tta"] = not params["evaluate"]["tta"]
    pipeline.path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert stale(pipeline) == {"evaluate": [{"changed deps": {"params.yaml": {"evaluate": "modified"}}}]}
        log = repro(pipeline, "evaluate")
        assert ran(log) == ["evaluate"], log
        assert "Stage 'prepare' didn't change" in log and "Stage 'train' didn't change" in log
        metrics = json.loads((evaluate_out / "metrics.json").read_text())
        assert ("tta_accuracy" in metrics) == params["evaluate"]["tta"]
        assert stale(pipeline) == {
            "promote": [{"changed deps": {"artifacts/evaluate/metrics.json": "modified"}}]
        }
    finally:  # back to the state every other test expects (evaluate's outputs are not in the DVC cache)
        for name, data in saved.items():
            pipeline.path(name).write_bytes(data)
        for name, data in saved_outputs.items():
            (evaluate_out / name).write_bytes(data)
    assert stale(pipeline) == {}


def kill_when_writing(proc: subprocess.Popen, out: Path, kill, timeout: float = 120) -> bool:
    """Kill `proc` as soon as the stage has written a file into its temporary output folder beside `out`.
    False when it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(any(d.iterdir()) for d in out.parent.glob(f".{out.name}.tmp-*") if d.is_dir()):
            kill()
            proc.wait(timeout=30)
            return True
        time.sleep(0.001)
    proc.wait(timeout=30)
    return False


def start(pipeline, *cmd: str) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=pipeline.root,
        env=pipeline.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: a kill reaches DVC's child too
    )


def sweep_temporaries(out: Path) -> list[str]:
    """The temporary folders that killed runs left beside `out` (garbage, never read), removed."""
    left = sorted(d.name for d in out.parent.glob(f".{out.name}.tmp-*"))
    for name in left:
        shutil.rmtree(out.parent / name)
    return left


def test_killing_the_prepare_stage_while_it_writes_keeps_the_previous_outputs(pipeline, prepared):
    before = digests(prepared)
    for _ in range(3):  # the write takes a few hundred ms: catching it may take a second try
        proc = start(pipeline, sys.executable, "pipelines/prepare.py")
        if kill_when_writing(proc, prepared, proc.kill):
            break
    else:
        pytest.fail("prepare finished every time before it could be killed while writing")
    assert proc.returncode == -signal.SIGKILL
    assert digests(prepared) == before  # the previous outputs, whole
    assert sweep_temporaries(prepared)  # what it was writing went to a temporary folder beside them
    assert stale(pipeline) == {}
    assert ran(repro(pipeline)) == []


def test_killing_dvc_repro_while_the_stage_writes_then_dvc_repro_recovers(pipeline, prepared):
    before = digests(prepared)
    for _ in range(3):
        proc = start(pipeline, "dvc", "repro", "--force", "prepare")
        if kill_when_writing(proc, prepared, lambda p=proc: os.killpg(p.pid, signal.SIGKILL)):
            break
    else:
        pytest.fail("dvc repro finished every time before it could be killed while writing")
    # DVC itself removes a stage's outputs before running it (they stay in its cache); never half of them.
    assert not prepared.exists() or digests(prepared) == before
    sweep_temporaries(prepared)
    log = repro(pipeline, "prepare")  # no stale lock, no manual cleanup
    assert digests(prepared) == before
    assert stale(pipeline) == {}
    assert "train" not in ran(log + repro(pipeline))  # same data: nothing downstream ran


def test_a_truncated_raw_csv_fails_the_stage_naming_file_and_line_and_repro_recovers(pipeline, prepared):
    raw = pipeline.path(yaml.safe_load(pipeline.path("params.yaml").read_text())["data"]["raw_path"])
    good, before = raw.read_bytes(), digests(prepared)
    cut = good.index(b"\n", len(good) // 2) + 1000  # half-way through a row: a download that died
    raw.write_bytes(good[:cut])
    line = good[:cut].count(b"\n") + 1
    try:
        done = pipeline.run("dvc", "repro", "prepare", check=False)
        assert done.returncode != 0
        err = done.stderr
        assert f"prepare failed: {raw.relative_to(pipeline.root)}" in err, err
        assert f"line {line}: 2 fields, expected 3 (emotion,pixels,Usage)" in err, err
        assert not list(prepared.parent.glob(f".{prepared.name}.tmp-*"))  # nothing half-written anywhere
    finally:
        raw.write_bytes(good)
    repro(pipeline, "prepare")  # the data is back: DVC restores the outputs
    assert digests(prepared) == before and stale(pipeline) == {}


# --- the stage entry point on bad data, without DVC (which would remove the outputs first) -----------------


@pytest.fixture(scope="module")
def stage_dir(tmp_path_factory) -> Path:
    """A scratch project: params.yaml (the smoke configuration) + a good prepared output to protect."""
    root = tmp_path_factory.mktemp("stage")
    params = yaml.safe_load(subprocess.run(
        [str(Path(sys.executable).parent / "emotune"), "config", "compose", "experiment=smoke"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout)  # fmt: skip
    params["paths"]["prepared"] = "prepared"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    from emotune.data import prepare

    prepare(synthesize(root / "good_synthetic.csv", rows=70, seed=1), root / "prepared", synthetic=True)
    return root


def bad_csv(root: Path) -> Path:
    rows = synthesize(root / "ok_synthetic.csv", rows=70, seed=2).read_text().splitlines()
    rows[0] = "emotion,pixels,Usage,comment"  # a header from some other file
    path = root / "wrong_header_synthetic.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def unknown_class_folder(root: Path) -> Path:
    from PIL import Image

    folder = root / "faces_synthetic"
    for split, label in (("train", "happy"), ("train", "sleepy"), ("test", "sad")):
        (folder / split / label).mkdir(parents=True, exist_ok=True)
        Image.new("L", (48, 48), 128).save(folder / split / label / "1.png")
    return folder


BAD_INPUTS = {
    "wrong header": (
        bad_csv,
        "line 1: header is 'emotion,pixels,Usage,comment', expected 'emotion,pixels,Usage'",
    ),
    "unknown class folder": (
        unknown_class_folder,
        "train/sleepy: unknown class folder 'sleepy' (expected angry, disgust, fear, happy, sad, surprise, "
        "neutral)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_raw_data_fails_the_stage_with_the_place_and_the_fix_and_writes_nothing(stage_dir, case):
    make, message = BAD_INPUTS[case]
    params = yaml.safe_load((stage_dir / "params.yaml").read_text())
    params["data"]["raw_path"] = str(make(stage_dir))
    (stage_dir / "params.yaml").write_text(yaml.safe_dump(params))
    before, listing = digests(stage_dir / "prepared"), sorted(p.name for p in stage_dir.iterdir())
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines/prepare.py")],
        cwd=stage_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"prepare failed: {params['data']['raw_path']}" in done.stderr and message in done.stderr
    assert "Traceback" not in done.stderr  # a message for the person who fixes the data, not a crash
    assert digests(stage_dir / "prepared") == before
    assert sorted(p.name for p in stage_dir.iterdir()) == listing  # no temporary folder left either
