"""Bad bytes and damaged models, in-process: the image decoder under mutation fuzzing (it may only ever return
an RGB array or raise ImageError with a 4xx status), and every way a model folder can be broken at load."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.serving import photo_rgb, tiny_model_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from emotune.recognizer import EmotionRecognizer, ModelLoadError, check_model
from emotune.vision import ImageError, decode_image

MAX_BYTES, MAX_PIXELS = 1_000_000, 4_000_000


def _seed_images() -> dict[str, bytes]:
    face = Image.fromarray(photo_rgb()[100:400:4, 150:400:4])  # small: many examples per second
    out = {}
    for fmt, kwargs in {
        "PNG": {},
        "JPEG": {"quality": 80},
        "GIF": {"save_all": True, "append_images": [face.rotate(90)]},
        "WEBP": {"quality": 80},
        "BMP": {},
        "TIFF": {},
    }.items():
        buf = io.BytesIO()
        face.save(buf, format=fmt, **kwargs)
        out[fmt] = buf.getvalue()
    return out


SEEDS = _seed_images()


@st.composite
def mutated_images(draw) -> bytes:
    """A valid image of some format, then truncated, overwritten and/or spliced at drawn offsets."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "header"]))
        if kind == "truncate":
            del data[at:]
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:  # the first bytes: dimensions, colour type, bit depth
            at = draw(st.integers(0, min(40, len(data))))
            data[at : at + 1] = bytes([draw(st.integers(0, 255))])
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_images())
def test_decoder_fuzz_only_returns_rgb_or_a_4xx_image_error(data):
    try:
        rgb = decode_image(data, MAX_BYTES, MAX_PIXELS)
    except ImageError as err:
        assert err.status in (400, 413, 415) and str(err)
    else:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.size > 0
        assert rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS


# --- damaged model folders -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture
def model(good_model, tmp_path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(good_model, copy)
    return copy


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_an_intact_model_passes_the_checks(model):
    path, card = check_model(model)
    assert path == model / "emotune.onnx" and card["labels"][0] == "angry"
    assert EmotionRecognizer.load(model).classify(np.zeros((1, 48, 48), np.uint8)).shape == (1, 7)


@pytest.mark.parametrize("name", ["emotune.onnx", "model.keras"])
def test_a_model_file_that_differs_from_its_card_is_refused(model, name):
    flip_one_byte(model / name)
    card = json.loads((model / "model_card.json").read_text())
    with pytest.raises(ModelLoadError) as err:
        EmotionRecognizer.load(model / name)
    message = str(err.value)
    assert f"{model / name}: sha256" in message and card["files"][name]["sha256"] in message
    assert str(model / "model_card.json") in message
    assert "dvc repro promote" in message and "EMOTUNE_MODEL_DIR" in message


def test_the_service_path_refuses_it_too(model, monkeypatch):
    """EmotionRecognizer.from_config with $EMOTUNE_MODEL_DIR: what the service's __init__ runs."""
    from emotune.serving import serve_settings

    flip_one_byte(model / "emotune.onnx")
    monkeypatch.setenv("EMOTUNE_MODEL_DIR", str(model))
    with pytest.raises(ModelLoadError, match="sha256"):
        EmotionRecognizer.from_config(serve_settings().serve)


def test_a_card_that_does_not_list_the_file_is_refused(model):
    card = json.loads((model / "model_card.json").read_text())
    del card["files"]["emotune.onnx"]
    (model / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"not emotune\.onnx: it describes another model"):
        check_model(model)


def test_a_card_that_is_not_json_is_refused(model):
    (model / "model_card.json").write_text('{"labels": ["angry", ')
    with pytest.raises(ModelLoadError, match=r"model_card\.json is not valid JSON"):
        check_model(model)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_model_without_a_card_fails_to_load_with_the_file_and_the_fix(model, damage):
    (model / "model_card.json").unlink()  # a hand-made folder: nothing to compare the hash with
    onnx = model / "emotune.onnx"
    data = onnx.read_bytes()
    onnx.write_bytes(
        {"truncated": data[: len(data) // 3], "garbage": b"\x13\x37" * 999, "empty": b""}[damage]
    )
    with pytest.raises(ModelLoadError) as err:
        EmotionRecognizer.load(model)
    assert f"cannot load the model {onnx}" in str(err.value) and "dvc repro promote" in str(err.value)


def test_a_missing_model_says_where_and_how_to_get_one(tmp_path, monkeypatch):
    from emotune.serving import serve_settings

    monkeypatch.setenv("EMOTUNE_MODEL_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"no model in {tmp_path}.*dvc repro promote"):
        EmotionRecognizer.from_config(serve_settings().serve)
