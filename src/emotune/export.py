"""Exporting a trained Keras model for serving: ONNX in float32, float16 weights or static int8, and the
check that the export scores like the float32 model on the same faces.

float16 weights halve the file at the same speed on CPU (onnxruntime folds the casts back to float32 at
load); int8, statically quantised with ranges calibrated on training faces, halves it again and runs about
twice as fast. `export_accuracy` measures what either costs; promote fails when it is more than
`promote.max_accuracy_drop` points.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emotune.evaluation import load_predictor
from emotune.preprocess import FACE_SIZE, to_model_input
from emotune.recognizer import KERAS_FILE, ONNX_FILE

PRECISIONS = ("float32", "float16", "int8")


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


def inference_model(model: Any) -> Any:
    """`model` inside a graph that calls it with training=False, the same input and output.

    Keras calls a model without a `training` flag from `model.export()` and a bare `model(x)`; a layer whose
    own default is training=True (CenterCrop, behind `model.crop`) then sets the flag for every layer after
    it, and batch normalisation normalises with the batch's own statistics (updating its moving ones), so a
    face's answer depends on the faces beside it. Pinned here, the exports and the saved .keras file answer
    like `predict`, alone or in a batch.
    """
    import keras

    faces = keras.Input(shape=model.input_shape[1:], name="face")
    return keras.Model(faces, model(faces, training=False), name=f"{model.name}_inference")


def check_export_matches(model: Any, onnx_path: Path, atol: float = 1e-4) -> None:
    """Refuse an ONNX file that does not answer like `model.predict` on seeded random faces, in one batch and
    one face at a time (a graph in training mode differs in both)."""
    faces = np.random.default_rng(0).integers(0, 256, (8, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    expected = model.predict(to_model_input(faces), verbose=0)
    predictor = load_predictor(onnx_path)
    answers = {
        "in one batch": predictor(faces),
        "one face at a time": np.concatenate([predictor(faces[i : i + 1]) for i in range(len(faces))]),
    }
    for how, got in answers.items():
        difference = float(np.max(np.abs(got - expected)))
        if difference > atol:
            raise RuntimeError(
                f"{onnx_path} does not compute what the Keras model's predict does ({how}: probabilities "
                f"differ by up to {difference:.3g}, more than {atol:g}); refusing it"
            )


def export_onnx_float32(model: Any, path: Path) -> Path:
    """Keras model -> ONNX (float32) of its inference graph, via Keras' own exporter (tf2onnx), checked
    against the model's predict."""
    import onnx

    model = inference_model(model)
    model(np.zeros((1, FACE_SIZE, FACE_SIZE, 1), np.float32))  # the exporter wants a model that has run
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # tf2onnx is chatty
        model.export(str(path), format="onnx", verbose=False)
    proto = onnx.load(str(path))
    _name_io(proto)
    onnx.save(proto, str(path))
    check_export_matches(model, path)
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
    inference_model(model).save(str(keras_path))
    if keras_path.stat().st_size <= keep_keras_max_mb * 1e6:
        files[KERAS_FILE] = keras_path
    else:
        keras_path.unlink()
    return files


def export_accuracy(
    reference: Path, exported: Path, faces: np.ndarray, labels: np.ndarray
) -> dict[str, float | int]:
    """Accuracy of the float32 and the exported ONNX model on the same faces, through the evaluation code."""
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
