"""One command, one report: where this project stands against the `fer` package on this machine.

    make bench                      # full run (docs/benchmarks.md); = python -m benchmarks.run --full
    make bench-quick                # CI-sized: small training model, few repeats (checks code, not results)
    python -m benchmarks.run --quick --only classifier,end_to_end --model-dir models

Prints Markdown tables (one per figure, then the targets) and writes the same as JSON and Markdown to
bench-results/ (git-ignored). Every figure is the median of repeated timed runs after a warm-up; every ratio
compares numbers measured in the same run on the same inputs. The exit code is 1 when anything failed
(a section raised, or the service answered a request with an error).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import cv2
import numpy as np

from benchmarks import common
from benchmarks.common import FULL, QUICK, Faces, Sizes, markdown_table, median, rates, ratio
from benchmarks.peer import FerPeer, fer_boxes, load_fer
from emotune.atomic import atomic_output

SECTIONS = ("training", "classifier", "end_to_end", "service", "accuracy", "calibration")
BUSY = 0.05  # other processes using more than this share of the CPU during a figure: the run is flagged


@dataclass
class Section:
    id: str
    title: str
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    others_cpu: float | None = None  # share of the CPU other processes used meanwhile (see CpuWatch)

    def markdown(self) -> str:
        parts = [f"### {self.title}", ""]
        if self.error:
            parts += [f"**FAILED**: `{self.error.strip().splitlines()[-1]}`", ""]
        if self.rows:
            parts += [markdown_table(self.columns, self.rows), ""]
        parts += [f"- {note}" for note in self.notes]
        return "\n".join(parts).rstrip() + "\n"


@dataclass
class Context:
    sizes: Sizes
    model_dir: Path
    out: Path
    faces: Faces
    peer: FerPeer | None
    peer_status: str
    results: dict[str, Any] = field(default_factory=dict)  # figures later sections and the targets use

    @cached_property
    def serve_cfg(self) -> Any:
        """conf/serve with $EMOTUNE_OVERRIDES and the EMOTUNE_* variables, as `bentoml serve` reads them."""
        from emotune.serving import serve_settings

        return serve_settings().serve

    def recognizer(self, file_name: str) -> Any | None:
        """The bundled model through EmotionRecognizer with the service's settings (None: file absent)."""
        from emotune.recognizer import EmotionRecognizer

        path = self.model_dir / file_name
        if not path.is_file():
            return None
        return EmotionRecognizer.from_config(self.serve_cfg, path, how="benchmark")

    @cached_property
    def onnx(self) -> Any:
        from emotune.recognizer import ONNX_FILE

        recognizer = self.recognizer(ONNX_FILE)
        if recognizer is None:
            raise FileNotFoundError(f"{self.model_dir / ONNX_FILE} is missing")
        return recognizer

    def peer_note(self) -> list[str]:
        return [] if self.peer else [f"`fer` peer skipped: {self.peer_status}"]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- 1. training throughput ---------------------------------------------------------------------------------


def training(ctx: Context) -> Section:
    """Images/s of one training step: the recipe before and the bundled one (augmentation and input included),
    the bundled network alone, and the same network in plain PyTorch (benchmarks/torch_reference.py)."""
    from emotune.config import compose
    from emotune.training import resolve_precision

    sizes = ctx.sizes
    (before_label, before), (after_label, after) = sizes.train_recipes
    precision = resolve_precision("auto")  # what a training run on this machine uses
    section = Section(
        "training",
        f"1. Training throughput (one step, batch {compose(list(after)).train.batch_size}, {precision})",
        ["recipe", "framework", "augmentation", "images/s", "vs before", "Keras vs PyTorch"],
    )
    rows = [
        (before_label, before, True),
        (after_label, after, True),
        (f"{after_label}: the network alone", (*after, "train.augment.enabled=false"), False),
    ]
    rates = keras_training_rates(
        ctx, [[*overrides, f"train.precision={precision}"] for _, overrides, _ in rows]
    )
    for (label, _, augmented), runs in zip(rows, rates, strict=True):
        section.rows.append(
            {"recipe": label, "framework": "Keras 3 / TensorFlow", "augmentation": augmented, "runs": runs}
        )
    cfg = compose(list(after))
    reference = torch_training_rates(ctx, cfg, precision)
    if isinstance(reference, str):
        section.notes.append(f"plain-PyTorch reference skipped: {reference}")
    else:
        section.rows.append(
            {
                "recipe": f"{after_label}: the same network",
                "framework": f"PyTorch {reference['torch']} (channels_last)",
                "augmentation": False,
                "runs": reference["runs"],
            }
        )
    for row in section.rows:
        row["images/s"] = median(row["runs"])
        row["vs before"] = ratio(row["images/s"], section.rows[0]["images/s"])
    if not isinstance(reference, str):
        section.rows[2]["Keras vs PyTorch"] = ratio(section.rows[2]["images/s"], section.rows[3]["images/s"])
    ctx.results["training"] = {r["recipe"]: r["images/s"] for r in section.rows}
    section.notes.append(
        f"{sizes.train_warmup_steps} warm-up steps, then {sizes.repeats} rounds in which the Keras recipes "
        f"take turns, {sizes.train_steps_per_run} steps each (median); inputs: {ctx.faces.source}; the "
        "PyTorch row runs afterwards in its own process without augmentation: compare it with the "
        "network-alone row"
    )
    return section


def keras_training_rates(ctx: Context, recipes: list[list[str]]) -> list[list[float]]:
    """Images/s of `training_model` fed by `datasets.training_batches`, as the train stage runs them, for
    each recipe (Hydra overrides). The recipes take turns, one timed run each per round, so a machine whose
    speed drifts over minutes (shared hosts do) slows them alike and their ratios hold."""
    import keras

    from emotune import datasets
    from emotune.config import compose
    from emotune.model import build_model
    from emotune.training import precision_policy, training_model

    sizes = ctx.sizes
    steps = sizes.train_steps_per_run
    trainers = []
    for overrides in recipes:
        cfg = compose(overrides)
        log(f"training: building {' '.join(overrides)}")
        keras.utils.set_random_seed(0)
        batch = int(cfg.train.batch_size)
        data, _ = datasets.training_batches(
            ctx.faces.x, datasets.one_hot(ctx.faces.y), batch_size=batch, seed=0
        )
        with precision_policy(str(cfg.train.precision)):
            model = build_model(cfg.model, image_size=int(cfg.data.image_size))
            trainer = training_model(model, cfg.train, steps_per_epoch=1000, seed=0)
        batches = iter(data)
        for _ in range(sizes.train_warmup_steps):
            trainer.train_on_batch(*next(batches))
        trainers.append((trainer, batches, batch))
    rates: list[list[float]] = [[] for _ in recipes]
    for _ in range(sizes.repeats):
        for runs, (trainer, batches, batch) in zip(rates, trainers, strict=True):
            inputs = [next(batches) for _ in range(steps)]  # fetched before the clock starts
            start = time.perf_counter()
            for x, y in inputs:
                trainer.train_on_batch(x, y)
            runs.append(batch * steps / (time.perf_counter() - start))
    return rates


def torch_training_rates(ctx: Context, cfg: Any, precision: str) -> dict[str, Any] | str:
    """The plain-PyTorch reference in a subprocess with .bench-torch on its path, or why it was skipped."""
    import subprocess

    from emotune.labels import NUM_CLASSES
    from emotune.model import scaled_blocks

    torch_dir = common.REPO / ".bench-torch"
    if not (torch_dir / "torch").is_dir():
        return "PyTorch is not installed in .bench-torch/ (make bench-torch)"
    model = cfg.model
    spec = {
        "blocks": scaled_blocks(str(model.name), float(model.width)),
        "channels": int(model.get("channels", 3)),
        "size": int(model.get("crop") or model.get("input_size", cfg.data.image_size)),
        "dense_units": int(model.dense_units),
        "dropout": float(model.dropout),
        "classes": NUM_CLASSES,
        "batch": int(cfg.train.batch_size),
        "precision": precision,
        "warmup_steps": ctx.sizes.train_warmup_steps,
        "steps_per_run": ctx.sizes.train_steps_per_run,
        "repeats": ctx.sizes.repeats,
    }
    log("training: the plain-PyTorch reference")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(torch_dir), str(common.REPO)])}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.torch_reference", json.dumps(spec)],
        cwd=common.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmarks.torch_reference failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- 2. classifier throughput -------------------------------------------------------------------------------


def _mb(path: Path) -> float | None:
    return path.stat().st_size / 1e6 if path.is_file() else None


def classifier(ctx: Context) -> Section:
    from emotune.recognizer import KERAS_FILE, ONNX_FILE

    sizes = ctx.sizes
    crops64 = ctx.faces.x[:64]
    singles = ctx.faces.x[: sizes.batch1_faces]
    runtimes: list[tuple[str, Callable[[np.ndarray], Any], float | None]] = [
        (
            "emotune, onnxruntime (EmotionRecognizer, served)",
            ctx.onnx.classify,
            _mb(ctx.model_dir / ONNX_FILE),
        )
    ]
    keras_rec = ctx.recognizer(KERAS_FILE)
    if keras_rec is not None:
        runtimes.append(("emotune, Keras (model.keras)", keras_rec.classify, _mb(ctx.model_dir / KERAS_FILE)))
    if ctx.peer:
        data = Path(sys.modules["fer"].__file__).parent / "data"
        runtimes += [
            (
                "fer, TFLite int8 (as FER() runs it)",
                ctx.peer.classify_tflite,
                _mb(data / "emotion_model_quantized.tflite"),
            ),
            ("fer, Keras mini-Xception (.hdf5)", ctx.peer.classify_keras, _mb(data / "emotion_model.hdf5")),
        ]
    section = Section(
        "classifier",
        "2. Classifier throughput (the same 48x48 FER2013 crops; faces/s)",
        ["runtime", "model MB", "batch 1", "batch 64", "batch 1 vs fer", "batch 64 vs fer"],
    )
    for name, classify, mb in runtimes:
        log(f"classifier: {name}")
        one = rates(lambda c=classify: [c(f[None]) for f in singles], len(singles), sizes.repeats)
        many = rates(
            lambda c=classify: [c(crops64) for _ in range(sizes.batch64_calls)],
            64 * sizes.batch64_calls,
            sizes.repeats,
        )
        section.rows.append(
            {
                "runtime": name,
                "model MB": mb,
                "batch 1": median(one),
                "batch 64": median(many),
                "runs": [one, many],
            }
        )
    fer = next((r for r in section.rows if r["runtime"].startswith("fer, TFLite")), None)
    for row in section.rows:
        row["batch 1 vs fer"] = ratio(row["batch 1"], fer and fer["batch 1"])
        row["batch 64 vs fer"] = ratio(row["batch 64"], fer and fer["batch 64"])
    section.notes += [
        "emotune rows include its preprocessing (crop validation, float conversion); fer rows include fer's "
        "(resize to 64x64, scaling to [-1, 1]). Ratios are against fer's TFLite path, the one FER() uses.",
        f"batch 1: {len(singles)} faces, one call each; batch 64: {sizes.batch64_calls} call(s) of 64 faces; "
        f"median of {sizes.repeats} runs",
        *ctx.peer_note(),
    ]
    return section


# --- 3. end-to-end frame rate -------------------------------------------------------------------------------


def end_to_end(ctx: Context) -> Section:
    sizes = ctx.sizes
    rec = ctx.onnx
    section = Section(
        "end_to_end",
        "3. End-to-end frame rate (640x480 frames: detect + classify every face)",
        ["pipeline", "faces/frame", "face px", "frames/s", "vs fer", "recall", "false detections"],
    )
    ctx.results["end_to_end"] = {}
    detect = ctx.peer.detect_emotions if ctx.peer else None
    for scenes in common.SCENE_SETS:
        per_frame, sides = scenes.per_frame, scenes.sides
        frames, truth = common.make_scenes(ctx.faces.x, sizes.frames, per_frame, seed=per_frame, sides=sides)
        bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]  # fer's input convention (OpenCV BGR)
        scene_columns = {"faces/frame": per_frame, "face px": f"{sides[0]}-{sides[1]}"}
        log(f"end-to-end: {scenes.label}, emotune")
        ours = {
            "pipeline": "emotune (Haar + onnxruntime)",
            **scene_columns,
            "frames/s": median(
                rates(lambda fs=frames: [rec.analyze(f) for f in fs], len(frames), sizes.repeats)
            ),
            **common.match(truth, [[face.box for face in rec.analyze(f).faces] for f in frames]),
        }
        rows = [ours]
        if detect is not None:
            log(f"end-to-end: {scenes.label}, fer")
            rows.append(
                {
                    "pipeline": "fer.FER(mtcnn=False).detect_emotions",
                    **scene_columns,
                    "frames/s": median(
                        rates(lambda bs=bgr: [detect(b) for b in bs], len(bgr), sizes.repeats)
                    ),
                    **common.match(truth, [fer_boxes(detect(b)) for b in bgr]),
                }
            )
        for row in rows:
            row["vs fer"] = ratio(row["frames/s"], rows[1]["frames/s"] if len(rows) > 1 else None)
        section.rows += rows
        ctx.results["end_to_end"][scenes.label] = rows
        if scenes == common.SCENE_SETS[0]:
            ctx.results["analyze_frame"] = next(
                (f for f in frames if len(rec.analyze(f).faces) == 1), frames[0]
            )
    detector = rec.detector
    ours_settings = (
        f"frontalface_alt2 on a {detector.downscale:g}x frame, pyramid step {detector.scale_factor:g}, "
        f"{detector.min_neighbors} neighbours, min face {detector.min_face_size} px"
    )
    section.notes += [
        f"{sizes.frames} frames per row, median of {sizes.repeats} passes; {common.face_size_note()}; "
        f"faces: {ctx.faces.source}",
        "recall: true faces with a detection of IoU >= 0.3; both use OpenCV's Haar cascades with their own "
        f"settings (emotune: {ours_settings}; "
        "fer: frontalface_default at full size, step 1.1, 5 neighbours, min face 50 px)",
        *ctx.peer_note(),
    ]
    return section


# --- 4. + 6. the service under load, and its memory ---------------------------------------------------------


def service(ctx: Context) -> list[Section]:
    from PIL import Image

    from benchmarks import service_load

    sizes = ctx.sizes
    frame = ctx.results.get("analyze_frame")
    if frame is None:
        frames, _ = common.make_scenes(ctx.faces.x, 1, 1, seed=1)
        frame = frames[0]
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    faces_in_frame = len(ctx.onnx.analyze(frame).faces)
    # The p99 target's workload: ten clients sending back to back.
    ten_clients = service_load.analyze_workload(jpeg, faces_in_frame, clients=10)
    workloads = [
        # One client: the service time of a request with no queue ahead of it, next to the 10-client target.
        (service_load.analyze_workload(jpeg, faces_in_frame, clients=1), sizes.service_requests // 2),
        (ten_clients, sizes.service_requests),
        (service_load.classify_workload(ctx.faces.x[:1], clients=10), sizes.service_requests),
        (service_load.classify_workload(ctx.faces.x[:64], clients=2), max(8, sizes.service_requests // 4)),
    ]
    # Ten cameras at a few frames/s each: the latency a client sees below saturation (adaptive batching
    # does not apply to /analyze, so these run with the first server only).
    paced = [
        (service_load.analyze_workload(jpeg, faces_in_frame, 10, rate), sizes.service_requests)
        for rate in sizes.paced_rates
    ]
    load = Section(
        "service",
        "4. Service under load (`bentoml serve` on 127.0.0.1, asyncio httpx client on the same machine)",
        [
            *("batching", "endpoint", "clients", "sends/s per client", "faces/request", "requests", "errors"),
            *("requests/s", "faces/s", "p50 ms", "p95 ms", "p99 ms"),
        ],
    )
    memory = Section(
        "memory",
        "6. Service memory (peak resident set, VmHWM, of the `bentoml serve` process tree after the load)",
        ["batching", "processes", "largest process MiB", "sum over processes MiB", "ready after s"],
    )
    ctx.results["service"] = []

    def measure(server: service_load.Server, work: service_load.Workload, requests: int, mode: str) -> None:
        detection_free = server.detection_free
        pace = f" at {work.rate_per_client:g}/s each" if work.rate_per_client else ""
        log(
            f"service: {work.path} x{work.faces_per_request}, {work.clients} clients{pace}, batching {mode}"
            + (", detection skipped" if detection_free else "")
        )
        result = service_load.load(server.url, work, sizes.repeats, requests, sizes.service_seconds)
        row = {"batching": mode, **result, "detection_free": detection_free}
        load.rows.append(
            row
            | {
                "endpoint": f"{work.path}{' (detection skipped)' if detection_free else ''}",
                "sends/s per client": f"{work.rate_per_client:g}" if work.rate_per_client else "max",
                "faces/request": work.faces_per_request,
                "requests/s": result["requests_per_s"],
                "faces/s": result["faces_per_s"],
                "p50 ms": result["p50_ms"],
                "p95 ms": result["p95_ms"],
                "p99 ms": result["p99_ms"],
            }
        )
        ctx.results["service"].append(row)

    for batching in sizes.batching_modes:
        mode = "on" if batching else "off"
        log(f"service: starting bentoml serve, adaptive batching {mode}")
        with service_load.serving(ctx.model_dir, batching, ctx.out / "logs") as server:
            for work, requests in workloads + (paced if batching == sizes.batching_modes[0] else []):
                measure(server, work, requests, mode)
            mem = server.memory()
            memory.rows.append(
                {
                    "batching": mode,
                    "processes": mem["processes"],
                    "largest process MiB": mem["peak_rss_largest_mib"],
                    "sum over processes MiB": mem["peak_rss_sum_mib"],
                    "ready after s": server.started_s,
                    **mem,
                }
            )
    if sizes.detection_free:
        # What /analyze at 10 clients does when detection costs nothing: the floor of any faster detector.
        log("service: starting bentoml serve with detection skipped (every frame gets the first one's boxes)")
        with service_load.serving(ctx.model_dir, True, ctx.out / "logs", detection_free=True) as server:
            measure(server, ten_clients, sizes.service_requests, "on")
    load.notes += [
        f"each row: a warm-up, then {sizes.repeats} runs of at most {sizes.service_requests} requests "
        f"(half for one /analyze client, a quarter for 64-face requests) or {sizes.service_seconds:.0f} s; "
        "requests/s and faces/s are medians over the runs, latency percentiles pool every timed request",
        f"/analyze: one 640x480 JPEG with {faces_in_frame} face(s) (multipart upload), music recommendations "
        "included; /classify: JSON of 48x48 grey crops. Adaptive batching applies to /classify only "
        "(serve.adaptive_batching)",
        "sends/s per client: max = the next request as soon as the answer is in (closed loop: the latency at "
        "saturation is the clients' count over the throughput); a number = a camera at that frame rate that "
        "waits for each answer, so the latency is what a client sees below saturation",
        "the client shares the CPU with the server: on 2 cores its own work lowers the server's numbers",
    ]
    if sizes.detection_free:
        load.notes.append(
            "detection skipped: a server whose face detector answers every frame with the boxes it found on "
            "its first (benchmarks/detection_free), the rest of each request unchanged: what a detector "
            "that costs nothing would leave"
        )
    memory.notes.append("sum over processes over-counts memory the processes share (libraries)")
    return [load, memory]


# --- 5. accuracy --------------------------------------------------------------------------------------------


def accuracy(ctx: Context) -> Section:
    from emotune.evaluation import classification_metrics

    section = Section(
        "accuracy",
        "5. Accuracy next to speed (FER2013 PublicTest, the same rows for every model)",
        ["model", "rows", "accuracy", "macro F1"],
    )
    if not ctx.faces.real:
        section.notes.append(f"skipped: no FER2013 data ({ctx.faces.source})")
        return section
    n = ctx.sizes.accuracy_rows or len(ctx.faces.x)
    x, y = ctx.faces.x[:n], ctx.faces.y[:n]
    models: list[tuple[str, Callable[[np.ndarray], Any]]] = [
        ("emotune (bundled model, ONNX)", ctx.onnx.classify)
    ]
    if ctx.peer:
        models += [
            ("fer, TFLite int8 (as FER() runs it)", ctx.peer.classify_tflite),
            ("fer, Keras mini-Xception (.hdf5)", ctx.peer.classify_keras),
        ]
    for name, classify in models:
        log(f"accuracy: {name}")
        probs = np.concatenate([np.asarray(classify(x[i : i + 256])) for i in range(0, len(x), 256)])
        metrics = classification_metrics(y, probs)
        section.rows.append(
            {"model": name, "rows": len(y), "accuracy": metrics["accuracy"], "macro F1": metrics["macro_f1"]}
        )
    card = ctx.onnx.card
    held_out = card.get("data", {}).get("evaluation_split") == "test"
    test_accuracy = card.get("metrics", {}).get("test", {}).get("test_accuracy")
    if card.get("export_check", {}).get("split", "validation") == "validation":
        caveat = (
            "PublicTest is this project's validation split (it chose the best epoch), and fer's model may "
            "have been trained on it: both figures can be optimistic"
        )
    else:
        caveat = (
            "PublicTest was held out of this project's training and choices (Training rows validated); "
            "fer's model may have been trained on it, so its figure can be optimistic"
        )
    section.notes += [
        f"{ctx.faces.source}, first {len(y)} rows",
        caveat
        + (
            f"; the model card's held-out (PrivateTest) accuracy: {test_accuracy:.4f}"
            if held_out and test_accuracy
            else ""
        ),
        *ctx.peer_note(),
    ]
    ctx.results["accuracy"] = {r["model"]: r["accuracy"] for r in section.rows}
    return section


def calibration(ctx: Context) -> Section:
    from benchmarks.calibration import simulate

    section = Section(
        "calibration",
        "7. Calibration to a resting face (FER2013 PublicTest, simulated people; benchmarks/calibration.py)",
        ["person", "accuracy", "calibrated", "macro F1", "calibrated ", "neutral recall", "calibrated  "],
    )
    if not ctx.faces.real:
        section.notes.append(f"skipped: no FER2013 data ({ctx.faces.source})")
        return section
    x, y = ctx.faces.x, ctx.faces.y
    probs = np.concatenate([ctx.onnx.classify(x[i : i + 256]) for i in range(0, len(x), 256)])
    draws = 50 if ctx.sizes.name == "full" else 5
    for row in simulate(probs, y, ctx.onnx.neutral, draws=draws):
        if "note" in row:
            section.notes.append(f"{row['person']}: skipped, {row['note']}")
            continue
        cells = [
            f"{100 * row[f'{m} {w}']:.1f}%"
            for m in ("accuracy", "macro F1", "neutral recall")
            for w in ("plain", "calibrated")
        ]
        section.rows.append(dict(zip(section.columns, [row["person"], *cells], strict=True)))
    source = (
        "the model card" if ctx.onnx.card.get("calibration") else "the default (no measurement on the card)"
    )
    section.notes += [
        f"{ctx.faces.source}, all {len(y)} rows; means over {draws} simulated people per row, each shifted "
        "by the tilt of 20 neutral faces the model reads as that emotion and calibrated on 30 other neutral "
        "faces seen through the same tilt; those 50 faces are not scored",
        f"the neutral reference t comes from {source}",
    ]
    return section


# --- targets, report ----------------------------------------------------------------------------------------


def targets(ctx: Context, errors: int) -> Section:
    section = Section("targets", "Targets (ratios from this run)", ["target", "goal", "measured", "met"])
    e2e = ctx.results.get("end_to_end", {})

    def add(name: str, goal: str, value: float | None, ok: bool | None) -> None:
        section.rows.append({"target": name, "goal": goal, "measured": value, "met": ok})

    one_face = common.SCENE_SETS[0].label
    if one_face in e2e:
        ours = e2e[one_face][0]
        add(f"end-to-end frames/s, {one_face}", ">= 30", ours["frames/s"], ours["frames/s"] >= 30)
        for label, rows in e2e.items():
            if len(rows) > 1:
                r = rows[0]["vs fer"]
                add(f"end-to-end vs fer, {label}", ">= 1 (goal 2)", r, r >= 1)
        if len(e2e[one_face]) > 1:  # every scene set, small faces included
            ours_found = sum(rows[0]["found"] for rows in e2e.values())
            fer_found = sum(rows[1]["found"] for rows in e2e.values())
            total = sum(rows[0]["faces"] for rows in e2e.values())
            add(
                "face-detection recall, emotune (all scenes)",
                f">= fer's ({fer_found / total:.2f})",
                ours_found / total,
                ours_found >= fer_found,
            )
    for row in ctx.results.get("service", []):
        if row["batching"] == "on" and row["endpoint"] == "/classify" and row["faces_per_request"] == 64:
            add(
                "/classify faces/s (64 per request, batching on)",
                ">= 500",
                row["faces_per_s"],
                (row["faces_per_s"] or 0) >= 500,
            )
        closed_loop = row["rate_per_client"] is None and not row["detection_free"]
        if row["batching"] == "on" and row["endpoint"] == "/analyze" and row["clients"] == 10 and closed_loop:
            add("/analyze p99 ms, 10 clients", "< 100", row["p99_ms"], (row["p99_ms"] or 1e9) < 100)
    add("errors (failed sections + failed requests)", "0", errors, errors == 0)
    floor = next((r for r in ctx.results.get("service", []) if r["detection_free"]), None)
    if floor and floor["p99_ms"] is not None:
        section.notes.append(
            f"/analyze p99 at 10 clients with detection skipped (figure 4, its floor for any detector): "
            f"{floor['p99_ms']:.0f} ms at {floor['requests_per_s']:.1f} requests/s"
        )
    return section


def describe_model(path: Path) -> str:
    """The model file, its size and what its card says it is."""
    card_path = path.parent / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    info = card.get("model", {})
    what = ", ".join(
        str(v)
        for v in (
            info.get("architecture"),
            info.get("parameters") and f"{info['parameters']:,} parameters",
            info.get("onnx_precision") and f"{info['onnx_precision']} ONNX weights",
            card.get("mlflow", {}).get("run_id") and f"MLflow run {card['mlflow']['run_id']}",
        )
        if v
    )
    shown = path.resolve().relative_to(common.REPO) if path.resolve().is_relative_to(common.REPO) else path
    return f"{shown} ({path.stat().st_size / 1e6:.1f} MB{'; ' + what if what else ''})"


def render(report: dict[str, Any], sections: list[Section]) -> str:
    m = report["machine"]
    lines = [
        f"## Benchmarks ({report['mode']} mode, {report['finished']})",
        "",
        f"Machine: {common.describe(m)}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in {**m["versions"], "fer": report.get("fer_version")}.items() if v)
        + ".",
        f"Model: {report['model']}.",
        "",
    ]
    if report["mode"] == "quick":
        lines += [
            "**Quick mode: a small training model and few repeats; it checks the code, not a result.**",
            "",
        ]
    if report["busy"]:
        lines += [
            "**Other processes used the CPU during "
            + ", ".join(f"{name} ({100 * share:.0f}%)" for name, share in report["busy"].items())
            + ": those numbers are not comparable.**",
            "",
        ]
    lines += [s.markdown() for s in sections]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI-sized run (small training model, few repeats)")
    mode.add_argument("--full", action="store_true", help="the full run (default)")
    parser.add_argument(
        "--model-dir", type=Path, default=common.REPO / "models", help="the bundled model (models/)"
    )
    parser.add_argument(
        "--out", type=Path, default=common.REPO / "bench-results", help="where JSON/Markdown go"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the fer package even when installed")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; expected {', '.join(SECTIONS)}")

    from emotune.recognizer import model_file

    try:
        model_path = model_file(args.model_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    started, whole_run = time.perf_counter(), common.CpuWatch()
    m = common.machine()
    log(f"{sizes.name} run on {common.describe(m)}; model {model_path}")
    faces = common.load_faces(args.out / "cache")
    peer, peer_status = (None, "--no-peer") if args.no_peer else load_fer()
    log(f"faces: {faces.source}; fer peer: {peer_status}")
    ctx = Context(sizes, args.model_dir, args.out, faces, peer, peer_status)

    runners: dict[str, Callable[[Context], Section | list[Section]]] = {
        "training": training,
        "classifier": classifier,
        "end_to_end": end_to_end,
        "service": service,
        "accuracy": accuracy,
        "calibration": calibration,
    }
    sections: list[Section] = []
    for name in SECTIONS:  # fixed order: the service reuses a frame from the end-to-end section
        if name not in only:
            continue
        t0, watch = time.perf_counter(), common.CpuWatch()
        try:
            made = runners[name](ctx)
        except Exception:
            made = Section(name, name, error=traceback.format_exc())
            log(f"{name} FAILED:\n{made.error}")
        for section in made if isinstance(made, list) else [made]:
            section.seconds, section.others_cpu = time.perf_counter() - t0, watch.others()
            sections.append(section)
    order = ["training", "classifier", "end_to_end", "service", "accuracy", "memory", "calibration"]  # 1..7
    sections.sort(key=lambda s: order.index(s.id) if s.id in order else len(order))
    errors = sum(1 for s in sections if s.error) + sum(r["errors"] for r in ctx.results.get("service", []))
    sections.append(targets(ctx, errors))

    busy = {s.id: s.others_cpu for s in sections if (s.others_cpu or 0) > BUSY}
    finished = dt.datetime.now(dt.UTC).replace(microsecond=0)
    report = {
        "mode": sizes.name,
        "finished": finished.isoformat(),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": m,
        "others_cpu": whole_run.others(),
        "busy": busy,
        "model": describe_model(model_path),
        "faces": faces.source,
        "fer": peer_status,
        "fer_version": peer.version if peer else None,
        "sizes": asdict(sizes),
        "errors": errors,
        "sections": [asdict(s) for s in sections],
    }
    text = render(report, sections)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = finished.strftime("%Y%m%dT%H%M%SZ")
    as_json = json.dumps(report, indent=2, default=_jsonable)
    for name, content in (
        (f"{sizes.name}-{stamp}.json", as_json),
        (f"latest-{sizes.name}.json", as_json),
        (f"latest-{sizes.name}.md", text),
    ):
        with atomic_output(args.out / name) as tmp:
            tmp.write_text(content + "\n")
    print(text)
    log(f"done in {report['seconds']} s, {errors} error(s); JSON: {args.out / f'latest-{sizes.name}.json'}")
    return 0 if errors == 0 else 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
