"""Choosing and packaging the model: MLflow run -> Model Registry (`champion`) -> models/ -> BentoML store.

`promote(cfg)` is the DVC `promote` stage:
1. the best FINISHED run of the experiment by `promote.metric` (a validation metric; test metrics are refused:
   choosing on the test split would make its numbers meaningless);
2. its logged Keras model is registered as `tracking.registered_model` and the alias `champion` moved to it;
3. the model is exported to ONNX (float16 weights by default: half the size, the same speed on CPU since
   onnxruntime folds the casts back to float32 at load; or int8, statically quantised with ranges calibrated
   on training faces: half that size again and about twice as fast) and its validation accuracy is measured
   against the float32 export: the stage fails if it drops by more than `promote.max_accuracy_drop` points.
   With `promote.flip_tta` the exported graph averages each face with its mirror image (emotune.tta), and
   both sides of that check include it;
4. models/ gets emotune.onnx (+ model.keras when small), model_card.json and MODEL_CARD.md, written in a
   temporary folder and moved in file by file (card last), and the serving files are logged to the run;
5. the folder is imported into the BentoML model store as `promote.bentoml_model` (`bentoml build` packs it).

Nothing here imports TensorFlow at module level: `bentoml_store_path` is used by the service.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emotune.atomic import sha256_file
from emotune.labels import EMOTIONS
from emotune.preprocess import FACE_SIZE
from emotune.recognizer import CARD_FILE, KERAS_FILE, ONNX_FILE

CARD_MD = "MODEL_CARD.md"
SERVING_FILES = (ONNX_FILE, KERAS_FILE, CARD_FILE, CARD_MD)  # what models/ may hold; stale ones are removed
PRECISIONS = ("float32", "float16", "int8")
PREPROCESSING = (
    "emotune.preprocess: RGB frame -> grayscale (OpenCV RGB2GRAY) -> face box from the detector, grown by "
    "serve.face_margin on every side as a square and clipped to the frame -> crop -> resize to 48x48 "
    "(INTER_AREA when shrinking, INTER_LINEAR when enlarging) -> uint8 -> float32 (N, 48, 48, 1) grey levels "
    "0..255. Inside its graph the model scales by 1/255 and, as its configuration says (model.input_size, "
    "model.crop, model.channels), resizes, takes the central crop and copies grey to 3 channels. FER2013 "
    "rows are already 48x48 grey crops and take the same to_model_input step in training."
)


# --- small helpers ---------------------------------------------------------------------------------------


def bentoml_store_path(name: str) -> Path | None:
    """The folder of `name:latest` in the BentoML model store ($BENTOML_HOME), or None when absent."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return Path(bentoml.models.get(f"{name}:latest").path)
    except NotFound:
        return None


# --- 1. the best run -------------------------------------------------------------------------------------


def check_metric(metric: str) -> None:
    if "test" in metric.lower():
        raise ValueError(
            f"promote.metric={metric!r}: the model is chosen on validation metrics; a test metric would leak "
            "the held-out split into the choice (use best_val_accuracy)"
        )


def best_run(
    client: Any, experiment: str, metric: str, mode: str = "max", validation_set: str | None = None
) -> Any:
    """The FINISHED run of `experiment` with the best `metric` (runs without it are ignored).

    With `validation_set` (a fingerprint from emotune.data.holdout), only runs that validated on those same
    faces compete: accuracies on different faces do not rank models.
    """
    check_metric(metric)
    if mode not in ("max", "min"):
        raise ValueError(f"promote.mode={mode!r}: expected max or min")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"MLflow experiment {experiment!r} not found: run the train stage first")
    filters = ["attributes.status = 'FINISHED'"]
    if validation_set:
        filters.append(f"tags.validation_set = '{validation_set}'")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=" AND ".join(filters),
        order_by=[f"metrics.`{metric}` {'DESC' if mode == 'max' else 'ASC'}", "attributes.start_time DESC"],
        max_results=1000,
    )
    runs = [r for r in runs if metric in r.data.metrics and np.isfinite(r.data.metrics[metric])]
    if not runs:
        which = f" validated on faces {validation_set}" if validation_set else ""
        raise LookupError(
            f"no finished run{which} of experiment {experiment!r} has the metric {metric!r} "
            "(runs record their validation faces since train.validation_holdout: train one)"
        )
    return runs[0]


def logged_model_id(run: Any) -> str:
    """The id of the Keras model the train stage logged to `run` (mlflow.keras.log_model)."""
    import mlflow

    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        output_format="list",
    )
    if not models:
        raise LookupError(
            f"MLflow run {run.info.run_id} has no logged model: was it made by the train stage?"
        )
    return models[0].model_id


def load_run_model(run: Any, model_id: str, train_out: Path) -> Any:
    """The run's Keras model: the train stage's file when it belongs to this run, else from MLflow."""
    import keras

    run_json = train_out / "run.json"
    local = train_out / KERAS_FILE
    if (
        run_json.is_file()
        and local.is_file()
        and json.loads(run_json.read_text()).get("run_id") == run.info.run_id
    ):
        return keras.models.load_model(local, compile=False)
    import mlflow

    return mlflow.keras.load_model(f"models:/{model_id}")


# --- 3. export -------------------------------------------------------------------------------------------


def _name_io(model_proto: Any, output_name: str = "probabilities") -> None:
    """Give the exported graph readable I/O: a symbolic batch dimension "N" and the output "probabilities"."""
    graph = model_proto.graph
    for value in (*graph.input, *graph.output):
        dim = value.type.tensor_type.shape.dim
        if dim:
            dim[0].dim_param = "N"
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [output_name if o == old else o for o in node.output]
        node.input[:] = [output_name if i == old else i for i in node.input]
    graph.output[0].name = output_name


def export_onnx_float32(model: Any, path: Path) -> Path:
    """Keras model -> ONNX (float32), via Keras' own exporter (tf2onnx)."""
    import onnx

    model(np.zeros((1, FACE_SIZE, FACE_SIZE, 1), np.float32))  # the exporter wants a model that has run
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # tf2onnx is chatty
        model.export(str(path), format="onnx", verbose=False)
    proto = onnx.load(str(path))
    _name_io(proto)
    onnx.save(proto, str(path))
    return path


def float16_weights(src: Path, dst: Path, min_elements: int = 16) -> Path:
    """Store the float32 weights as float16, each behind a Cast back to float32.

    The graph still computes in float32 (onnxruntime's CPU kernels are fastest there, and its constant folding
    turns the casts into float32 weights at load), input and output stay float32, the file is half the size.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(src))
    graph = proto.graph
    initializers, casts = [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= min_elements:
            half = numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float16), f"{init.name}__fp16"
            )
            initializers.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        else:
            initializers.append(init)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(dst))
    return dst


def int8_static(src: Path, dst: Path, calibration_faces: np.ndarray, batch_size: int = 64) -> Path:
    """onnxruntime static quantisation: int8 weights per channel, uint8 activations whose ranges come from
    `calibration_faces` (uint8 (N, 48, 48) training faces). On CPUs with VNNI/AMX it ran about twice as
    fast as float32 at half the float16 size; promote's export check measures what it costs in accuracy.

    Weights use 7 of their 8 bits (reduce_range): x86 CPUs without VNNI (AVX2 only) multiply uint8 by int8
    pairwise into saturating 16-bit sums, which full-range weights overflow: the same file then scored 1.6
    points less there than where it was made. With 7-bit weights every CPU computes the same thing."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from emotune.preprocess import to_model_input

    if len(calibration_faces) == 0:
        raise ValueError("int8 export needs calibration faces (the training split is empty)")
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = (
                {input_name: to_model_input(calibration_faces[i : i + batch_size])}
                for i in range(0, len(calibration_faces), batch_size)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    prepared = dst.with_name(dst.stem + "_prepared.onnx")
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(dst),
        Faces(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=True,
    )
    prepared.unlink()
    return dst


def export_serving_files(
    model: Any,
    out_dir: Path | str,
    precision: str = "float16",
    keep_keras_max_mb: float = 25.0,
    calibration_faces: np.ndarray | None = None,
) -> dict[str, Path]:
    """Write emotune.onnx in `precision` (+ model.keras when at most `keep_keras_max_mb`) into `out_dir`.

    int8 needs `calibration_faces` (training faces, never the split the export is checked on).

    Also leaves the float32 export as `emotune_float32.onnx` there for the accuracy comparison.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"promote.onnx_precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = export_onnx_float32(model, out / "emotune_float32.onnx")
    files = {"reference": reference}
    if precision == "float32":
        shutil.copyfile(reference, out / ONNX_FILE)
    elif precision == "float16":
        float16_weights(reference, out / ONNX_FILE)
    else:
        if calibration_faces is None:
            raise ValueError("promote.onnx_precision=int8 needs calibration faces")
        int8_static(reference, out / ONNX_FILE, calibration_faces)
    files[ONNX_FILE] = out / ONNX_FILE
    keras_path = out / KERAS_FILE
    model.save(str(keras_path))
    if keras_path.stat().st_size <= keep_keras_max_mb * 1e6:
        files[KERAS_FILE] = keras_path
    else:
        keras_path.unlink()
    return files


def export_accuracy(
    reference: Path, exported: Path, faces: np.ndarray, labels: np.ndarray
) -> dict[str, float | int]:
    """Accuracy of the float32 and the exported ONNX model on the same faces, through the evaluation code."""
    from emotune.evaluation import load_predictor

    ref = load_predictor(reference)(faces)
    exp = load_predictor(exported)(faces)
    acc_ref = float((ref.argmax(1) == labels).mean())
    acc_exp = float((exp.argmax(1) == labels).mean())
    return {
        "n": len(labels),
        "accuracy_float32": acc_ref,
        "accuracy_exported": acc_exp,
        "accuracy_drop_points": round(100.0 * (acc_ref - acc_exp), 4),
        "max_abs_probability_difference": float(np.max(np.abs(ref - exp))) if len(labels) else 0.0,
        "prediction_agreement": float((ref.argmax(1) == exp.argmax(1)).mean()) if len(labels) else 1.0,
    }


def enforce_export_check(check: Mapping[str, Any], max_drop: float, precision: str) -> None:
    """Fail when the export loses more than `max_drop` accuracy points against float32.

    No check can be finer than one face: on a tiny validation split (the smoke run's ~100 rows) a single
    flipped near-tie would otherwise fail it, so one face's worth is always allowed.
    """
    allowed = max(max_drop, 100.0 / max(1, int(check["n"])))
    if check["accuracy_drop_points"] > allowed:
        raise RuntimeError(
            f"the {precision} export loses {check['accuracy_drop_points']:.2f} accuracy points on the "
            f"validation split (limit promote.max_accuracy_drop={max_drop}): choose a higher "
            "promote.onnx_precision"
        )


# --- 4. the model card -----------------------------------------------------------------------------------


def build_card(
    *,
    name: str,
    precision: str,
    files: Mapping[str, Path],
    run: Any | None = None,
    registry: Mapping[str, Any] | None = None,
    export_check: Mapping[str, Any] | None = None,
    reproduce: str = "dvc exp run",
    model_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a user of models/ needs to know, as JSON (model_card.json; MODEL_CARD.md renders it)."""
    metrics: dict[str, dict[str, float]] = {"validation": {}, "test": {}, "training": {}}
    tags: dict[str, str] = {}
    params: dict[str, str] = {}
    if run is not None:
        tags, params = dict(run.data.tags), dict(run.data.params)
        for key, value in sorted(run.data.metrics.items()):
            group = "validation" if "val_" in key else "test" if key.startswith("test_") else "training"
            metrics[group][key] = float(value)
    return {
        "name": name,
        "labels": list(EMOTIONS),
        "input": {
            "name": "face",
            "shape": [None, FACE_SIZE, FACE_SIZE, 1],
            "dtype": "float32",
            "range": [0, 255],
            "description": "grey levels of 48x48 face crops (FER2013 format), not scaled",
        },
        "output": {
            "name": "probabilities",
            "shape": [None, len(EMOTIONS)],
            "dtype": "float32",
            "description": "softmax probabilities in `labels` order",
        },
        "preprocessing": PREPROCESSING,
        "model": {
            "architecture": params.get("model.name") or tags.get("model_name"),
            "onnx_precision": precision,
            **(model_info or {}),
        },
        "data": {
            "version": tags.get("data_version"),
            "source_sha256": tags.get("data_source_sha256"),
            "raw_path": params.get("data.raw_path"),
            "synthetic": tags.get("data_synthetic", params.get("data.synthetic")),
            "evaluation_split": tags.get("eval_split"),
            "evaluation_split_note": tags.get("eval_split_note"),
        },
        "metrics": metrics,
        "export_check": dict(export_check or {}),
        "mlflow": {
            "run_id": run.info.run_id if run is not None else None,
            "experiment_id": run.info.experiment_id if run is not None else None,
            "git_commit": tags.get("git_commit"),
            **(registry or {}),
        },
        "files": {
            fname: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
            for fname, path in files.items()
            if fname in SERVING_FILES
        },
        "reproduce": reproduce,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }


VALIDATION_SOURCES = {
    "holdout": "training rows held out by train.validation_holdout",
    "validation": "the validation split",
}


def split_label(split: str | None) -> str:
    """`validation` -> `validation split, FER2013 PublicTest rows`: the Usage names readers know."""
    from emotune.data.fer2013 import USAGE_TO_SPLIT

    usage = {s: u for u, s in USAGE_TO_SPLIT.items()}.get(split or "")
    return f"{split} split, FER2013 {usage} rows" if usage else "held-out split"


def card_markdown(card: Mapping[str, Any]) -> str:
    def pct(value: Any) -> str:
        return "—" if value is None else f"{100 * float(value):.2f}%"

    val, test, check = card["metrics"]["validation"], card["metrics"]["test"], card["export_check"]
    synthetic = str(card["data"].get("synthetic")).lower() == "true"
    lines = [
        f"# Model card: {card['name']}",
        "",
        *(
            ["**Trained on SYNTHETIC data: a pipeline check, not a facial-expression model.**", ""]
            * synthetic
        ),
        "Facial-expression classifier (FER2013, 7 classes): "
        + ", ".join(f"{i} {label}" for i, label in enumerate(card["labels"]))
        + ".",
        "",
        "| | |",
        "| --- | --- |",
        f"| architecture | {card['model'].get('architecture')} |",
        f"| input | `{card['input']['name']}` float32 (N, 48, 48, 1), grey levels 0..255 |",
        f"| output | `{card['output']['name']}` float32 (N, 7) softmax probabilities |",
        f"| ONNX weights | {card['model']['onnx_precision']} |",
        "| test-time augmentation | "
        + ("horizontal flip, averaged inside the model |" if card["model"].get("flip_tta") else "none |"),
        f"| validation accuracy (training run, {VALIDATION_SOURCES.get(check.get('split'), 'validation')}) |"
        f" {pct(val.get('best_val_accuracy'))} |",
        f"| test accuracy ({split_label(card['data'].get('evaluation_split'))}) |"
        f" {pct(test.get('test_accuracy'))} |",
        f"| test macro-F1 | {pct(test.get('test_macro_f1'))} |",
        f"| test accuracy with flip TTA (float32) | {pct(test.get('test_tta_accuracy'))} |",
        f"| export check on validation (float32 -> {card['model']['onnx_precision']}"
        f"{', both with flip TTA' if card['model'].get('flip_tta') else ''}) |"
        f" {pct(check.get('accuracy_float32'))} -> {pct(check.get('accuracy_exported'))}"
        f" ({check.get('accuracy_drop_points', '—')} points, n={check.get('n', '—')}) |",
        *(
            [
                f"| shipped file, held out ({split_label(held['split'])}) | {pct(held['accuracy_exported'])}"
                f" (n={held['n']}) |"
            ]
            if (held := check.get("held_out"))
            else []
        ),
        f"| data version (DVC) | `{card['data'].get('version')}` |",
        f"| MLflow run | `{card['mlflow'].get('run_id')}` |",
        f"| registry | {card['mlflow'].get('registered_model')} v{card['mlflow'].get('version')}"
        f" @{card['mlflow'].get('alias')} |",
        "",
        f"Evaluation split: {card['data'].get('evaluation_split_note') or '—'}",
        "",
        "## Preprocessing",
        "",
        card["preprocessing"],
        "",
        "## Files",
        "",
        "| file | bytes | sha256 |",
        "| --- | --- | --- |",
        *(f"| {f} | {v['bytes']:,} | `{v['sha256']}` |" for f, v in card["files"].items()),
        "",
        "## Reproduce",
        "",
        f"    {card['reproduce']}",
        "",
        *(
            ["## Changes since promotion", "", *(f"- {c['date']}: {c['change']}" for c in changes), ""]
            if (changes := card.get("changes"))
            else []
        ),
    ]
    return "\n".join(lines)


def write_card(card: Mapping[str, Any], out_dir: Path | str) -> dict[str, Path]:
    out = Path(out_dir)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    (out / CARD_MD).write_text(card_markdown(card))
    return {CARD_FILE: out / CARD_FILE, CARD_MD: out / CARD_MD}


def publish(staging: Path, models_dir: Path | str) -> Path:
    """Move the staged serving files into models/ one by one (os.replace: each file appears whole), the card
    last so that a card always describes files that are already in place; drop serving files not staged."""
    models = Path(models_dir)
    models.mkdir(parents=True, exist_ok=True)
    staged = [f for f in SERVING_FILES if (staging / f).is_file()]
    for fname in sorted(staged, key=lambda f: f in (CARD_FILE, CARD_MD)):
        os.replace(staging / fname, models / fname)
    for fname in SERVING_FILES:
        if fname not in staged:
            (models / fname).unlink(missing_ok=True)
    return models


# --- 2. + 5. registry and BentoML --------------------------------------------------------------------------


def register(client: Any, name: str, run: Any, model_id: str, alias: str) -> Any:
    """Register the run's logged model as `name` (once per run) and point `alias` at that version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run.info.run_id]
    version = existing[0] if existing else mlflow.register_model(f"models:/{model_id}", name)
    client.set_registered_model_alias(name, alias, version.version)
    return client.get_model_version(name, version.version)


def import_to_bentoml(models_dir: Path | str, name: str, card: Mapping[str, Any]) -> str:
    """Copy the serving files into a new version of `name` in the BentoML model store; returns its tag."""
    import bentoml

    models = Path(models_dir)
    metadata = {
        "labels": list(card["labels"]),
        "run_id": str(card["mlflow"].get("run_id")),
        "registered_model": str(card["mlflow"].get("registered_model")),
        "registry_version": str(card["mlflow"].get("version")),
        "onnx_precision": str(card["model"]["onnx_precision"]),
        "onnx_sha256": str(card["files"][ONNX_FILE]["sha256"]),
    }
    with bentoml.models.create(name=name, metadata=metadata, labels={"stage": "champion"}) as stored:
        for fname in SERVING_FILES:
            if (models / fname).is_file():
                shutil.copy2(models / fname, stored.path_of(fname))
    return str(stored.tag)


def reproduce_command(cfg: Any, run: Any) -> str:
    """The command for the card: at the commit promote runs at (it holds the export settings as well as the
    training code, which DVC would have retrained on had it changed since the run), else the run's commit."""
    from emotune.tracking import git_commit

    tags = run.data.tags
    if tags.get("reproduce"):
        return str(tags["reproduce"])
    command = str(cfg.promote.get("reproduce") or "dvc exp run")
    commit = git_commit()
    if commit == "unknown":
        commit = tags.get("git_commit")
    if commit and commit != "unknown":
        return f"git checkout {commit} && {command}"
    return command


def promote(cfg: Any, models_dir: Path | str | None = None, bentoml_store: bool = True) -> dict[str, Any]:
    """The `promote` stage (see the module docstring). Returns the model card."""
    import mlflow
    from mlflow import MlflowClient

    from emotune import tracking
    from emotune.data import load_prepared
    from emotune.data.holdout import held_out_split, validation_faces

    pcfg = cfg.promote
    precision = str(pcfg.onnx_precision)
    flip_tta = bool(pcfg.get("flip_tta", False))
    models = Path(models_dir or cfg.paths.models)
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg))
    client = MlflowClient()

    splits = load_prepared(cfg.paths.prepared)
    validation = validation_faces(splits, cfg.train.get("validation_holdout"), int(cfg.seed))
    validation_set = validation.describe()["fingerprint"]
    trained = tracking.read_run_json(Path(cfg.paths.train_out) / "run.json").get("validation", {})
    if trained.get("fingerprint") not in (None, validation_set):
        raise ValueError(
            f"the train stage validated on other faces ({trained['fingerprint']}) than seed and "
            f"train.validation_holdout pick now ({validation_set}): rerun the train stage (dvc repro)"
        )
    run = best_run(
        client,
        str(cfg.tracking.experiment),
        str(pcfg.metric),
        str(pcfg.get("mode", "max")),
        validation_set=validation_set,
    )
    model_id = logged_model_id(run)
    print(f"promote: run {run.info.run_id} has the best {pcfg.metric} = {run.data.metrics[pcfg.metric]:.4f}")
    model = load_run_model(run, model_id, Path(cfg.paths.train_out))
    if flip_tta:
        from emotune.tta import with_flip_average

        model = with_flip_average(model)
        print("promote: the exported model averages each face with its mirror image (promote.flip_tta)")

    held_out = held_out_split(splits, validation)
    models.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".promote-", dir=models.parent) as tmp:
        staging = Path(tmp)
        calibration = None
        if precision == "int8":  # a seeded sample of the faces the run fitted on sets the activation ranges
            fit_faces = splits["train"][0][validation.fit_rows]  # never the faces the export is checked on
            pick = np.random.default_rng(int(cfg.seed)).permutation(len(fit_faces))
            calibration = fit_faces[np.sort(pick[: int(pcfg.get("calibration_faces", 512))])]
        files = export_serving_files(
            model, staging, precision, float(pcfg.get("keep_keras_max_mb", 25)), calibration
        )
        reference = files.pop("reference")
        check = export_accuracy(reference, files[ONNX_FILE], validation.x, validation.y)
        print(
            f"promote: validation accuracy ({validation.source}) float32 {check['accuracy_float32']:.4f}, "
            f"{precision} {check['accuracy_exported']:.4f} ({check['accuracy_drop_points']:+.2f} points); "
            f"{ONNX_FILE} {files[ONNX_FILE].stat().st_size / 1e6:.1f} MB"
        )
        max_drop = float(pcfg.get("max_accuracy_drop", 0.5))
        enforce_export_check(check, max_drop, precision)
        if held_out:  # reported on the card, after every choice is made; it decides nothing
            check["held_out"] = {
                "split": held_out,
                **export_accuracy(reference, files[ONNX_FILE], *splits[held_out]),
            }
            print(
                f"promote: {held_out} split (held out) accuracy of {ONNX_FILE}: "
                f"{check['held_out']['accuracy_exported']:.4f}"
            )
        size_mb, bundle_mb = files[ONNX_FILE].stat().st_size / 1e6, float(pcfg.get("bundle_max_mb", 25))
        if size_mb > bundle_mb:
            # A warning, not a failure: experiments may be big; the model committed to models/ should not be.
            print(
                f"promote: WARNING {ONNX_FILE} is {size_mb:.1f} MB, over promote.bundle_max_mb={bundle_mb:g} "
                "for the bundled model: use promote.onnx_precision=int8 or a narrower model (model.width)"
            )

        name, alias = str(cfg.tracking.registered_model), str(pcfg.alias)
        version = register(client, name, run, model_id, alias)
        onnx_sha = sha256_file(files[ONNX_FILE])
        client.set_model_version_tag(name, version.version, "onnx_sha256", onnx_sha)
        client.set_model_version_tag(name, version.version, "onnx_precision", precision)
        client.set_model_version_tag(
            name, version.version, "serving_files", f"runs:/{run.info.run_id}/serving"
        )
        registry_info = {"registered_model": name, "version": int(version.version), "alias": alias}
        print(f"promote: registered {name} version {version.version} as @{alias}")

        card = build_card(
            name=name,
            precision=precision,
            files=files,
            run=run,
            registry=registry_info,
            export_check={
                "split": validation.source,
                "validation_set": validation_set,
                **check,
                "max_accuracy_drop": max_drop,
            },
            reproduce=reproduce_command(cfg, run),
            model_info={
                "parameters": int(model.count_params()),
                "logged_model_id": model_id,
                "flip_tta": flip_tta,
            },
        )
        files.update(write_card(card, staging))
        for path in files.values():
            client.log_artifact(run.info.run_id, str(path), artifact_path="serving")
        publish(staging, models)

    if bentoml_store:
        tag = import_to_bentoml(models, str(pcfg.bentoml_model), card)
        print(f"promote: imported into the BentoML model store as {tag}")
    return card
