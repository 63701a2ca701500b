"""The benchmarks: their pieces (scenes, detection matching, tables) and one real quick run of the whole
command (a tiny exported model, a real `bentoml serve`), checked for structure, positive figures, no errors.
Timings themselves are not asserted: they depend on the machine and on what else runs on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.serving import tiny_model_dir

from benchmarks import common, service_load
from benchmarks.peer import PEER_DIR
from emotune.config import REPO_ROOT


def test_scenes_place_each_face_whole_inside_the_frame_without_overlap() -> None:
    faces = np.random.default_rng(0).integers(0, 256, (10, 48, 48), dtype=np.uint8)
    frames, truth = common.make_scenes(faces, frames=4, per_frame=3, seed=1)
    assert len(frames) == len(truth) == 4
    for frame, boxes in zip(frames, truth, strict=True):
        assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
        assert len(boxes) == 3
        for i, (x, y, w, h) in enumerate(boxes):
            assert 110 <= w == h <= 160 and x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
            patch = frame[y : y + h, x : x + w]
            assert (patch[..., 0] == patch[..., 1]).all()  # the grey face, not the colour background
            assert all(common.iou(boxes[i], other) == 0 for other in boxes[i + 1 :])


def test_scenes_of_small_faces_keep_their_sizes() -> None:
    faces = np.random.default_rng(0).integers(0, 256, (10, 48, 48), dtype=np.uint8)
    _, truth = common.make_scenes(faces, frames=6, per_frame=2, seed=2, sides=(50, 90))
    sides = [w for boxes in truth for _, _, w, _ in boxes]
    assert len(sides) == 12 and min(sides) >= 50 and max(sides) <= 90


def test_match_counts_found_faces_missed_faces_and_false_detections() -> None:
    truth = [[(0, 0, 100, 100), (200, 0, 100, 100)], [(0, 0, 50, 50)]]
    found = [[(10, 10, 100, 100), (400, 400, 30, 30)], []]  # one hit, one false detection; a missed face
    assert common.match(truth, found) == {"faces": 3, "found": 1, "recall": 1 / 3, "false detections": 1}
    # one detection cannot count for two faces
    assert common.match([[(0, 0, 100, 100), (5, 5, 100, 100)]], [[(0, 0, 100, 100)]])["found"] == 1


def test_markdown_table_formats_numbers_and_missing_values() -> None:
    table = common.markdown_table(["a", "b"], [{"a": 1234.5, "b": None}, {"a": 0.123, "b": True}])
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| 1,234 | — |", "| 0.12 | yes |"]


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys) -> None:
    from benchmarks.run import main

    assert main(["--quick", "--model-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no model in" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_detection_free_server_answers_every_frame_with_its_first_frames_boxes() -> None:
    """benchmarks/detection_free, which figure 4's detection-skipped row starts the server with."""
    script = (
        "import sys; sys.path.insert(0, 'tests'); import numpy as np; from helpers.serving import photo_rgb; "
        "from emotune.vision import HaarFaceDetector; d = HaarFaceDetector(); first = d.detect(photo_rgb()); "
        "print(len(first), d.detect(np.zeros((480, 640, 3), np.uint8)) == first)"
    )
    for switch, expected in (("1", ["1", "True"]), ("", ["1", "False"])):
        env = {
            **os.environ,
            "PYTHONPATH": str(service_load.DETECTION_FREE),
            "EMOTUNE_BENCH_DETECTION_FREE": switch,
        }
        proc = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.stdout.split() == expected, proc.stderr[-2000:]


@pytest.mark.slow
def test_quick_benchmark_runs_every_figure_without_errors(tmp_path_factory) -> None:
    model_dir = tiny_model_dir(tmp_path_factory)
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--model-dir", str(model_dir), "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "latest-quick.json").read_text())
    assert (out / "latest-quick.md").read_text().strip() == proc.stdout.strip()
    assert report["mode"] == "quick" and report["errors"] == 0
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    sections = {s["id"]: s for s in report["sections"]}
    order = [
        "training",
        "classifier",
        "end_to_end",
        "service",
        "accuracy",
        "memory",
        "calibration",
        "targets",
    ]
    assert list(sections) == order
    assert all(s["error"] is None for s in sections.values())
    for s in sections.values():  # the Markdown shows every section with its table
        assert f"### {s['title']}" in proc.stdout
        if s["rows"]:
            assert "| " + " | ".join(s["columns"]) + " |" in proc.stdout

    training = sections["training"]["rows"]
    assert [r["framework"] for r in training[:3]] == ["Keras 3 / TensorFlow"] * 3
    assert [r["augmentation"] for r in training[:3]] == [True, True, False]
    assert all(r["images/s"] > 0 for r in training) and training[0]["vs before"] == 1.0
    with_torch = (REPO_ROOT / ".bench-torch/torch").is_dir()
    assert (len(training) == 4) == with_torch
    if with_torch:  # the network alone, Keras against plain PyTorch, as a ratio
        assert training[3]["framework"].startswith("PyTorch")
        keras_alone, plain_torch = training[2]["images/s"], training[3]["images/s"]
        assert training[2]["Keras vs PyTorch"] == pytest.approx(keras_alone / plain_torch)
    else:
        assert "plain-PyTorch reference skipped" in proc.stdout

    with_peer = (PEER_DIR / "fer").is_dir()
    classifier = sections["classifier"]["rows"]
    assert classifier[0]["runtime"].startswith("emotune, onnxruntime")
    assert all(r["batch 1"] > 0 and r["batch 64"] > 0 for r in classifier)
    assert any(r["runtime"].startswith("fer,") for r in classifier) == with_peer
    if not with_peer:
        assert "`fer` peer skipped" in proc.stdout

    e2e = sections["end_to_end"]["rows"]
    assert [(r["faces/frame"], r["face px"]) for r in e2e[:: 2 if with_peer else 1]] == [
        (1, "110-160"),
        (3, "110-160"),
        (2, "50-90"),
    ]
    assert all(r["frames/s"] > 0 and 0 <= r["recall"] <= 1 for r in e2e)
    assert len(e2e) == (6 if with_peer else 3)

    service = sections["service"]["rows"]
    modes = ["on" if batching else "off" for batching in common.QUICK.batching_modes]
    assert [
        (r["batching"], r["endpoint"], r["faces_per_request"]) for r in service if r["endpoint"] != "/analyze"
    ] == [(mode, "/classify", n) for mode in modes for n in (1, 64)]
    paced = [(modes[0], 10, rate) for rate in common.QUICK.paced_rates]  # with the first server only
    analyze = [r for r in service if r["endpoint"] == "/analyze"]
    assert [(r["batching"], r["clients"], r["rate_per_client"]) for r in analyze] == [
        (modes[0], 1, None),
        (modes[0], 10, None),
        *paced,
        *((mode, n, None) for mode in modes[1:] for n in (1, 10)),
    ]
    for r in service:
        if r["rate_per_client"]:  # each client waits its turn: the offered rate bounds the measured one
            assert r["requests_per_s"] <= 1.25 * r["clients"] * r["rate_per_client"], r
    for r in service:
        assert r["errors"] == 0 and r["requests"] > 0
        assert r["requests_per_s"] > 0 and 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
    # Figure 7 runs on real faces only; with this untrained model it checks the code, not a gain (the unit
    # tests of benchmarks.calibration check that on a model that misreads resting faces).
    calibration = sections["calibration"]
    if (common.SHARED_DIR / common.FER2013_CSV).is_file():
        people = [r["person"] for r in calibration["rows"]] + [n.split(":")[0] for n in calibration["notes"]]
        assert "unbiased (no shift)" in people and "rests looking sad" in people
        for row in calibration["rows"]:
            assert all(0 <= float(row[c].rstrip("%")) <= 100 for c in calibration["columns"][1:]), row
    else:
        assert not calibration["rows"] and "skipped" in calibration["notes"][0]
    memory = sections["memory"]["rows"]
    assert [r["batching"] for r in memory] == modes
    assert all(r["processes"] >= 1 and r["largest process MiB"] > 50 for r in memory)

    accuracy = sections["accuracy"]
    if (common.SHARED_DIR / common.FER2013_CSV).is_file():
        assert all(0 <= r["accuracy"] <= 1 and r["rows"] == 256 for r in accuracy["rows"])
        assert len(accuracy["rows"]) == (3 if with_peer else 1)
    else:
        assert not accuracy["rows"] and "skipped" in accuracy["notes"][0]

    targets = {r["target"]: r for r in sections["targets"]["rows"]}
    assert targets["errors (failed sections + failed requests)"]["met"] is True
    assert targets["end-to-end frames/s, 1 x 110-160 px"]["measured"] > 0
