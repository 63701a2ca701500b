"""emotune.portable's pieces: lossless face coding, the time budget, the run check and the accelerator-side
augmentation (PyTorch, from .bench-torch/)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.portable import import_torch

from emotune.portable import decode_faces, differences, encode_faces, epochs_within_budget

AUGMENT = {"enabled": True, "flip": True, "rotate": 0.05, "translate": 0.1, "zoom": 0.1, "brightness": 0.2,
           "contrast": 0.2}  # fmt: skip


def test_faces_survive_png_coding_bit_for_bit_and_take_less_room():
    rng = np.random.default_rng(0)
    # smooth faces (like real ones) compress; noise is there so every grey level occurs
    base = np.linspace(0, 255, 48 * 48).reshape(48, 48)
    faces = np.stack([(base + rng.normal(0, 8, (48, 48))).clip(0, 255) for _ in range(20)]).astype(np.uint8)
    data, offsets = encode_faces(faces)
    assert offsets[0] == 0 and offsets[-1] == len(data) and len(offsets) == 21
    assert np.array_equal(decode_faces(data, offsets), faces)
    assert len(data) < faces.nbytes


def test_a_damaged_face_is_refused_with_the_fix():
    data, offsets = encode_faces(np.zeros((2, 48, 48), np.uint8))
    data = data.copy()
    data[offsets[1] + 20 : offsets[1] + 40] = 0
    with pytest.raises(ValueError, match="pack it again"):
        decode_faces(data, offsets)


@pytest.mark.parametrize(
    ("planned", "budget", "epoch", "expected"),
    [
        (250, 600, 2.0, 250),  # everything fits
        (250, 600, 10.0, 59),  # the timing epoch is paid first: (600 - 10) // 10
        (250, 15, 10.0, 0),  # not even one after the timing epoch
        (3, 1e9, 1e-12, 3),  # never more than planned, even for a near-zero timing
    ],
)
def test_the_budget_holds_the_epochs_left_after_the_timing_epoch(planned, budget, epoch, expected):
    assert epochs_within_budget(planned, budget, epoch) == expected


def test_differences_name_each_changed_leaf_by_its_dotted_key():
    ran = {"config": {"train": {"epochs": 120, "lr": 0.01}, "seed": 0}, "data": {"train.npz": "aa"}}
    now = {"config": {"train": {"epochs": 250, "lr": 0.01}, "seed": 0}, "data": {"train.npz": "bb"}}
    assert differences(now, ran) == ["config.train.epochs", "data.train.npz"]
    assert differences(now, now) == []
    assert differences({"a": 1}, {"b": 1}) == ["a", "b"]


def faces_batch(torch, n: int = 16):
    return torch.linspace(0, 255, 48).repeat(n, 48, 1) * torch.linspace(0.2, 1.0, n)[:, None, None]


def test_augmentation_off_returns_the_faces_untouched():
    torch = import_torch()
    from emotune.portable import augment

    x = faces_batch(torch)
    assert augment(x, {"enabled": False}, torch.Generator().manual_seed(0)) is x
    assert torch.equal(augment(x, {"flip": False}, torch.Generator().manual_seed(0)), x)


def test_flips_mirror_some_faces_and_leave_the_others():
    torch = import_torch()
    from emotune.portable import augment

    x = faces_batch(torch, 64)
    y = augment(x, {"flip": True}, torch.Generator().manual_seed(0))
    flipped = torch.all(y == x.flip(-1), dim=(1, 2))
    kept = torch.all(y == x, dim=(1, 2))
    assert torch.all(flipped | kept)
    assert 10 < int(flipped.sum()) < 54  # about half of 64


def test_brightness_moves_each_face_by_at_most_its_fraction_of_255():
    torch = import_torch()
    from emotune.portable import augment

    x = torch.full((64, 48, 48), 128.0)
    y = augment(x, {"flip": False, "brightness": 0.2}, torch.Generator().manual_seed(0))
    shift = (y - x)[:, 0, 0]
    assert torch.all(shift.abs() <= 0.2 * 255 + 1e-3)
    assert float(shift.std()) > 10  # each face its own shift
    assert torch.all(y == y[:, :1, :1])  # one shift per face, the same for every pixel


def test_the_full_augmentation_is_seeded_bounded_and_keeps_the_shape():
    torch = import_torch()
    from emotune.portable import augment

    x = faces_batch(torch)
    a = augment(x, AUGMENT, torch.Generator().manual_seed(3))
    b = augment(x, AUGMENT, torch.Generator().manual_seed(3))
    c = augment(x, AUGMENT, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 255
    assert not torch.equal(a, x)


def test_a_shift_moves_the_face_by_the_drawn_fraction_of_its_side():
    torch = import_torch()
    from emotune.portable import augment

    x = torch.zeros(200, 48, 48)
    x[:, 20:28, 20:28] = 255  # a bright square in the middle
    y = augment(x, {"flip": False, "translate": 0.1}, torch.Generator().manual_seed(0))
    cols = torch.arange(48.0)
    centre_x = (y.sum(1) * cols).sum(1) / y.sum((1, 2))
    moved = centre_x - 23.5
    assert float(moved.abs().max()) <= 0.1 * 48 + 0.5  # translate 0.1 of 48 pixels, both ways
    assert float(moved.min()) < -2 and float(moved.max()) > 2
