"""Loading and validating both FER2013 formats: the Kaggle CSV (plain and gzip) and the image folders."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np
import pytest

from emotune.data import DataValidationError, load, load_csv, load_image_folder
from emotune.data.fer2013 import SPLITS, USAGE_TO_SPLIT

HEADER = "emotion,pixels,Usage"


def pixels(seed: int, n: int = 2304) -> str:
    return " ".join(str(v) for v in np.random.default_rng(seed).integers(0, 256, n))


def good_rows() -> list[str]:
    return [
        f"0,{pixels(0)},Training",
        f"3,{pixels(1)},Training",
        f"6,{pixels(2)},PublicTest",
        f"5,{pixels(3)},PrivateTest",
        f"1,{pixels(4)},Training",
    ]


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    text = "\n".join([header, *rows]) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["faces.csv", "faces.csv.gz"])
def test_good_csv_loads_in_file_order(tmp_path: Path, name: str) -> None:
    data = load_csv(write_csv(tmp_path / name, good_rows()), progress=False)
    assert data.x.shape == (5, 48, 48) and data.x.dtype == np.uint8
    assert data.y.tolist() == [0, 3, 6, 5, 1]
    expected = np.array([int(v) for v in pixels(1).split()], np.uint8).reshape(48, 48)
    np.testing.assert_array_equal(data.x[1], expected)  # row-major 48x48
    splits = data.splits()
    assert list(splits) == ["train", "validation", "test"]
    assert splits["train"][1].tolist() == [0, 3, 1]
    assert data.counts()["train"] == {
        "angry": 1, "disgust": 1, "fear": 0, "happy": 1, "sad": 0, "surprise": 0, "neutral": 0, "total": 3
    }  # fmt: skip


def test_header_in_another_order_with_spaces_and_quotes(tmp_path: Path) -> None:
    # Kaggle's icml_face_data.csv: "emotion, Usage, pixels" with a quoted pixels field, CRLF line ends.
    rows = [f'2, Training,"{pixels(7)}"', f'4, PublicTest,"{pixels(8)}"']
    path = tmp_path / "icml_face_data.csv"
    path.write_bytes(("emotion, Usage, pixels\r\n" + "\r\n".join(rows) + "\r\n").encode())
    data = load(path, progress=False)
    assert data.y.tolist() == [2, 4] and data.split.tolist() == [0, 1]


def test_no_private_test_rows_means_no_test_split(tmp_path: Path) -> None:
    rows = [r for r in good_rows() if "PrivateTest" not in r]
    assert list(load_csv(write_csv(tmp_path / "f.csv", rows), progress=False).splits()) == [
        "train",
        "validation",
    ]


BAD_ROWS = {
    "label_out_of_range": ("7,{p},Training", "label 7 is not in 0..6"),
    "label_negative": ("-1,{p},Training", "label '-1' is not an integer"),
    "label_not_integer": ("happy,{p},Training", "label 'happy' is not an integer"),
    "too_few_pixels": ("0,{short},Training", "2303 pixel values, expected 2304"),
    "too_many_pixels": ("0,{p} 1,Training", "2305 pixel values, expected 2304"),
    "pixel_above_255": ("0,256 {rest},Training", "pixel 1 is 256, outside 0..255"),
    "pixel_not_integer": ("0,{rest} 12.5,Training", "pixel 2304 is '12.5', not an integer"),
    "pixel_word": ("0,1 x {rest2},Training", "pixel 2 is 'x', not an integer"),
    "unknown_usage": ("0,{p},Validation", "unknown Usage 'Validation'"),
    "missing_field": ("0,{p}", "2 fields, expected 3"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_each_kind_of_bad_row_is_named_with_its_line_number(tmp_path: Path, kind: str) -> None:
    template, message = BAD_ROWS[kind]
    p = pixels(9)
    bad = template.format(
        p=p, short=" ".join(p.split()[:-1]), rest=" ".join(p.split()[1:]), rest2=" ".join(p.split()[2:])
    )
    rows = good_rows()
    rows.insert(2, bad)  # the 3rd data row is line 4 of the file (line 1 is the header)
    with pytest.raises(DataValidationError) as info:
        load_csv(write_csv(tmp_path / "bad.csv", rows), progress=False)
    assert info.value.problems == [("line 4", info.value.problems[0][1])]
    assert message in info.value.problems[0][1]
    assert "line 4" in str(info.value) and message in str(info.value)


def test_many_bad_rows_lists_the_first_ones_and_counts_all(tmp_path: Path) -> None:
    rows = [f"9,{pixels(i)},Training" for i in range(30)]
    with pytest.raises(DataValidationError) as info:
        load_csv(write_csv(tmp_path / "bad.csv", rows), progress=False, max_errors=5)
    assert info.value.total == 30
    assert [where for where, _ in info.value.problems] == [f"line {n}" for n in range(2, 7)]
    assert "30 problem(s) (showing the first 5)" in str(info.value)


def test_one_row_with_several_problems_reports_all_of_them(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError) as info:
        load_csv(write_csv(tmp_path / "bad.csv", ["8,1 2 3,Test"]), progress=False)
    what = info.value.problems[0][1]
    assert "label 8" in what and "3 pixel values" in what and "unknown Usage 'Test'" in what


@pytest.mark.parametrize(
    "header", ["emotion,pixels", "label,pixels,Usage", "emotion,pixels,Usage,extra", "0,1 2 3,Training"]
)
def test_wrong_header(tmp_path: Path, header: str) -> None:
    with pytest.raises(DataValidationError, match="line 1: header is"):
        load_csv(write_csv(tmp_path / "bad.csv", good_rows(), header=header), progress=False)


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataValidationError, match="empty file"):
        load_csv(tmp_path / "empty.csv", progress=False)
    with pytest.raises(DataValidationError, match="no data rows"):
        load_csv(write_csv(tmp_path / "header.csv", []), progress=False)


def test_truncated_gzip(tmp_path: Path) -> None:
    whole = write_csv(tmp_path / "whole.csv.gz", good_rows()).read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataValidationError, match="truncated or corrupt gzip"):
        load_csv(cut, progress=False)


def test_binary_garbage_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(HEADER.encode() + b"\n" + bytes(range(128, 256)) * 10)
    with pytest.raises(DataValidationError, match="not UTF-8"):
        load_csv(path, progress=False)


# --- image folders ----------------------------------------------------------------------------------------


def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def face(value: int, size: int = 48) -> np.ndarray:
    img = np.full((size, size), value, np.uint8)
    img[: size // 2] = 255 - value  # top half differs: orientation survives the round trip
    return img


def test_image_folders_in_kaggle_layout(tmp_path: Path) -> None:
    root = tmp_path / "fer2013"
    write_image(root / "train" / "Angry" / "a.png", face(10))
    write_image(root / "train" / "happy" / "b.png", face(20))
    write_image(root / "train" / "happy" / "c.jpg", face(30))
    write_image(root / "test" / "neutral" / "PublicTest_1.png", face(40))
    write_image(root / "test" / "sad" / "PrivateTest_2.png", face(50))  # msambare names say the Usage
    write_image(root / "test" / "surprise" / "x.png", face(60))  # no prefix: test/ -> PublicTest
    write_image(root / "train" / ".hidden" / "junk.png", face(0))  # hidden entries are skipped
    data = load(root, progress=False)
    assert data.format == "image_folder"
    counts = data.counts()
    assert {s: c["total"] for s, c in counts.items()} == {"train": 3, "validation": 2, "test": 1}
    assert counts["train"]["angry"] == 1 and counts["train"]["happy"] == 2
    assert counts["validation"]["neutral"] == 1 and counts["validation"]["surprise"] == 1
    assert counts["test"]["sad"] == 1
    np.testing.assert_array_equal(data.splits()["train"][0][0], face(10))  # PNG is lossless


def test_image_folder_other_sizes_and_colour_go_through_preprocess(tmp_path: Path) -> None:
    from emotune.preprocess import crop_face, to_gray

    rgb = np.zeros((96, 96, 3), np.uint8)
    rgb[..., 0], rgb[48:, :, 1] = 200, 100  # red everywhere, green in the bottom half
    write_image(tmp_path / "train" / "fear" / "big.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    data = load_image_folder(tmp_path, progress=False)
    assert data.x.shape == (1, 48, 48)
    np.testing.assert_array_equal(data.x[0], crop_face(to_gray(rgb), None, 48))


@pytest.mark.parametrize(
    ("bad_path", "named", "message"),
    [
        ("train/contempt/a.png", "train/contempt", "unknown class folder 'contempt'"),
        ("holdout/happy/a.png", "holdout", "unknown split folder 'holdout'"),
        ("train/happy/notes.txt", "train/happy/notes.txt", "not an image"),
        ("train/loose.png", "train/loose.png", "a file outside a class folder"),
    ],
)
def test_image_folder_errors_name_the_path(tmp_path: Path, bad_path: str, named: str, message: str) -> None:
    write_image(tmp_path / "train" / "happy" / "ok.png", face(1))
    target = tmp_path / bad_path
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".png":
        write_image(target, face(2))
    else:
        target.write_text("hello")
    with pytest.raises(DataValidationError) as info:
        load_image_folder(tmp_path, progress=False)
    assert info.value.problems == [(str(tmp_path / named), info.value.problems[0][1])]
    assert message in info.value.problems[0][1]


def test_unreadable_image_and_empty_root(tmp_path: Path) -> None:
    broken = tmp_path / "a" / "test" / "sad" / "broken.png"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a png")
    with pytest.raises(DataValidationError, match=r"broken\.png: not a readable image"):
        load_image_folder(tmp_path / "a", progress=False)
    (tmp_path / "b").mkdir()
    with pytest.raises(DataValidationError, match="no split folders"):
        load_image_folder(tmp_path / "b", progress=False)


def test_usage_to_split_contract() -> None:
    assert USAGE_TO_SPLIT == {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
    assert tuple(USAGE_TO_SPLIT.values()) == SPLITS
