"""Choosing and shipping the model: MLflow run -> Model Registry (`champion`) -> models/ -> BentoML store.

`promote_stage(cfg)` is the DVC `promote` stage:
1. the best FINISHED run of the experiment by `promote.metric` (a validation metric; test metrics are refused:
   choosing on the test split would make its numbers meaningless), among runs validated on the same faces;
2. the model is exported (emotune.export: ONNX in `promote.onnx_precision`) and its validation accuracy is
   measured against the float32 export: the stage fails if it drops by more than `promote.max_accuracy_drop`
   points. With `promote.flip_tta` the exported graph averages each face with its mirror image
   (emotune.tta), and both sides of that check include it;
3. `replaces_shipped`: the model already in models/ stays unless the candidate was trained on the same data,
   validated on the same faces and scores strictly better on them (or `promote.force`); when it stays, the
   stage prints why and stops there: nothing is registered, written or imported;
4. the run's logged Keras model is registered as `tracking.registered_model` and the alias `champion` moved
   to it;
5. models/ gets emotune.onnx (+ model.keras when small), model_card.json and MODEL_CARD.md
   (emotune.model_card), written in a temporary folder and moved in file by file (card last), and the serving
   files are logged to the run;
6. the folder is imported into the BentoML model store as `promote.bentoml_model` (`bentoml build` packs it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emotune import tracking
from emotune.atomic import sha256_file
from emotune.data import load_prepared
from emotune.data.splits import held_out_split, validation_faces
from emotune.ensemble import accuracy as ensemble_accuracy
from emotune.ensemble import averaged, networks
from emotune.evaluation import load_predictor
from emotune.export import enforce_export_check, export_accuracy, export_serving_files
from emotune.labels import EMOTIONS
from emotune.model_card import CARD_MD, SERVING_FILES, build_card, write_card
from emotune.recognizer import CARD_FILE, KERAS_FILE, ONNX_FILE, model_file
from emotune.tta import with_flip_average

# --- the best run -------------------------------------------------------------------------------------


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

    With `validation_set` (a fingerprint from emotune.data.splits), only runs that validated on those same
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


# --- registry and BentoML --------------------------------------------------------------------------


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
    tags = run.data.tags
    if tags.get("reproduce"):
        return str(tags["reproduce"])
    command = str(cfg.promote.get("reproduce") or "dvc exp run")
    commit = tracking.git_commit()
    if commit == "unknown":
        commit = tags.get("git_commit")
    if commit and commit != "unknown":
        return f"git checkout {commit} && {command}"
    return command


FORCE = "promote.force=true replaces it"


def shipped_card(models: Path) -> tuple[dict[str, Any] | None, str]:
    """The card of the model in `models`, or None and why it cannot be read."""
    try:
        card = json.loads((models / CARD_FILE).read_text())
        missing = [
            k for k in ("mlflow", "data", "export_check", "model") if not isinstance(card.get(k), dict)
        ]
        if missing or "run_id" not in card["mlflow"]:
            raise KeyError(", ".join(missing) or "mlflow.run_id")
    except (OSError, ValueError, KeyError, AttributeError) as err:
        return None, f"its model card cannot be read ({err}), so it cannot be compared"
    return card, ""


def incomparable(card: Mapping[str, Any], run: Any, validation_set: str) -> str | None:
    """Why the shipped model (its `card`) and the candidate `run` cannot be compared on validation: other
    data, or other validation faces (the shipped model may have trained on the candidate's); None if not."""
    shipped_data = card["data"].get("source_sha256")
    shipped_synthetic = str(card["data"].get("synthetic"))
    data, synthetic = run.data.tags.get("data_source_sha256"), run.data.tags.get("data_synthetic")
    if shipped_data != data or shipped_synthetic != synthetic:
        return (
            f"the candidate was trained on other data (source sha256 {str(data)[:12]}, synthetic {synthetic})"
            f" than the shipped model ({str(shipped_data)[:12]}, synthetic {shipped_synthetic}), so their "
            "accuracies do not compare"
        )
    shipped_faces = card["export_check"].get("validation_set")
    if shipped_faces != validation_set:
        return (
            f"the shipped model validated on other faces ({shipped_faces}) than the candidate "
            f"({validation_set}), so it may have trained on the candidate's"
        )
    return None


def replaces_shipped(
    models: Path, run: Any, validation_set: str, validation: Any, check: Mapping[str, Any], force: bool
) -> tuple[bool, str]:
    """Whether the candidate (its export `check` on the `validation` faces) replaces the model in `models`,
    and why. Only a model trained on the same data and validated on the same faces is compared; it is
    scored again on those faces, and the candidate must beat it. `force` replaces it whatever it is."""
    if not any((models / f).is_file() for f in (ONNX_FILE, KERAS_FILE)):
        return True, "it holds no model"
    if force:
        return True, "promote.force=true"
    card, why = shipped_card(models)
    if card is None:
        return False, f"{why}; {FORCE}"
    shipped_run = card["mlflow"]["run_id"]
    if shipped_run == run.info.run_id and not card["model"].get("ensemble"):
        return True, f"it holds this run's model ({shipped_run}): refreshed"
    if why := incomparable(card, run, validation_set):
        return False, f"{why}; {FORCE}"
    shipped = load_predictor(model_file(models))(validation.x)
    shipped_accuracy = float((shipped.argmax(1) == validation.y).mean())
    candidate_accuracy = float(check["accuracy_exported"])
    verdict = (
        f"validation accuracy of the candidate {candidate_accuracy:.4f}, of the shipped model "
        f"{shipped_accuracy:.4f} (the same {len(validation.y)} faces)"
    )
    if candidate_accuracy > shipped_accuracy:
        return True, verdict
    return False, f"{verdict}; {FORCE} anyway"


def neutral_mean(model_path: Path, validation: Any) -> dict[str, Any]:
    """What the shipped file reads on average for the validation faces labelled neutral: the reference a
    resting face is calibrated to (emotune.calibration)."""
    neutral = validation.x[validation.y == EMOTIONS.index("neutral")]
    if not len(neutral):
        return {}
    mean = load_predictor(model_path)(neutral).mean(axis=0)
    return {
        "neutral_mean": [round(float(p), 6) for p in mean],
        "faces": len(neutral),
        "split": validation.source,
    }


def shipped_members(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The networks the shipped model averages (one, unless it is an ensemble), as its card records them."""
    if members := card["model"].get("ensemble"):
        return [dict(m) for m in members]
    return [
        {
            "run_id": card["mlflow"]["run_id"],
            "logged_model_id": card["model"].get("logged_model_id"),
            "architecture": card["model"].get("architecture"),
        }
    ]


def ensemble_partner(
    models: Path, run: Any, validation_set: str, max_passes: int
) -> tuple[list[Any], list[dict[str, Any]], str]:
    """The shipped model's networks (without its mirror-image average) and what its card says of them, when
    the candidate `run` may be averaged with them: the same data and validation faces (the choice is then
    made on faces none of them trained on), not this run's own network, its model.keras in place, and at
    most `max_passes` networks in all. Else no networks and why."""
    import keras

    if not (models / KERAS_FILE).is_file():
        return [], [], f"{models} has no {KERAS_FILE} to average with"
    card, why = shipped_card(models)
    if card is None:
        return [], [], why
    members = shipped_members(card)
    if run.info.run_id in {m.get("run_id") for m in members}:
        return [], [], f"it holds this run's network already ({run.info.run_id})"
    if why := incomparable(card, run, validation_set):
        return [], [], why
    if len(members) + 1 > max_passes:
        why = (
            f"it averages {len(members)} network(s) already: with the candidate's, a face would cost more "
            f"than promote.max_network_passes={max_passes} passes"
        )
        return [], [], why
    found = networks(keras.models.load_model(models / KERAS_FILE, compile=False))
    if len(found) != len(members):
        return [], [], f"its {KERAS_FILE} holds {len(found)} network(s), its card lists {len(members)}"
    return found, members, ""


def with_shipped_if_better(
    model: Any,
    network: Any,
    members: list[dict[str, Any]],
    models: Path,
    run: Any,
    validation_set: str,
    validation: Any,
    pcfg: Any,
) -> tuple[Any, list[dict[str, Any]], bool]:
    """`promote.ensemble_with_shipped`: the candidate's `network` averaged with the shipped model's networks
    (with the mirror image too when promote.flip_tta allows it and promote.max_network_passes leaves room),
    when they may be averaged (see ensemble_partner) and that scores better on the validation faces than
    `model`, the candidate as it would ship alone (float32, before the export). Returns the model to export,
    the networks it averages and whether it averages each face with its mirror image."""
    flip = bool(pcfg.get("flip_tta", False))
    max_passes = int(pcfg.get("max_network_passes", 2))
    partners, partner_members, why = ensemble_partner(models, run, validation_set, max_passes)
    if not partners:
        print(f"promote: not averaging with the shipped model: {why}")
        return model, members, flip
    plain = averaged([network, *partners])
    variants = {False: plain}
    if flip and 2 * (len(partners) + 1) <= max_passes:
        variants[True] = with_flip_average(plain)
    scores = {mirror: ensemble_accuracy(m, validation.x, validation.y) for mirror, m in variants.items()}
    mirror = max(scores, key=lambda k: (scores[k], not k))  # a tie goes to the cheaper graph
    alone = ensemble_accuracy(model, validation.x, validation.y)
    runs = ", ".join(str(m.get("run_id")) for m in partner_members)
    said = (
        f"validation accuracy ({validation.source}, float32) alone {alone:.4f}, averaged with the shipped "
        f"model's network (run {runs}){' and the mirror image' if mirror else ''} {scores[mirror]:.4f}"
    )
    if scores[mirror] > alone:
        print(f"promote: averaging with the shipped model (promote.ensemble_with_shipped): {said}")
        return variants[mirror], members + partner_members, mirror
    print(f"promote: not averaging with the shipped model: {said}")
    return model, members, flip


def promote_stage(
    cfg: Any, models_dir: Path | str | None = None, bentoml_store: bool = True
) -> dict[str, Any]:
    """The `promote` stage (see the module docstring). Returns the model card."""
    import mlflow
    from mlflow import MlflowClient

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
    network = load_run_model(run, model_id, Path(cfg.paths.train_out))
    model = with_flip_average(network) if flip_tta else network
    members = [
        {
            "run_id": run.info.run_id,
            "logged_model_id": model_id,
            "architecture": run.data.params.get("model.name"),
        }
    ]
    if pcfg.get("ensemble_with_shipped"):
        model, members, flip_tta = with_shipped_if_better(
            model, network, members, models, run, validation_set, validation, pcfg
        )
    if flip_tta:
        print("promote: the exported model averages each face with its mirror image (promote.flip_tta)")

    held_out = held_out_split(splits, validation)
    models.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".promote-", dir=models.parent) as tmp:
        staging = Path(tmp)
        int8_faces = None
        if precision == "int8":  # a seeded sample of the faces the run fitted on sets the activation ranges
            fit_faces = splits["train"][0][validation.fit_rows]  # never the faces the export is checked on
            pick = np.random.default_rng(int(cfg.seed)).permutation(len(fit_faces))
            int8_faces = fit_faces[np.sort(pick[: int(pcfg.get("calibration_faces", 512))])]
        files = export_serving_files(
            model, staging, precision, float(pcfg.get("keep_keras_max_mb", 25)), int8_faces
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

        replace, why = replaces_shipped(
            models, run, validation_set, validation, check, bool(pcfg.get("force"))
        )
        if not replace:
            print(f"promote: keeping the model in {models}: {why}")
            return json.loads((models / CARD_FILE).read_text())
        print(f"promote: replacing the model in {models}: {why}")

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
            calibration=neutral_mean(files[ONNX_FILE], validation),
            model_info={
                "parameters": int(model.count_params()),
                "logged_model_id": model_id,
                "flip_tta": flip_tta,
                **({"ensemble": members} if len(members) > 1 else {}),
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
