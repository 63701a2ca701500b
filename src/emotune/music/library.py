"""A local music library: a folder of the user's audio files, read with mutagen; they play in the page.

Placing a file in valence–energy space (first rule that applies wins):

1. **match** — its artist + title (tags, else "Artist - Title" file name) equal a catalogue row (or a
   playlist song when no catalogue is configured): that row becomes playable from the file.
2. **sidecar** — `emotune_moods.csv` in the library folder lists `path` (relative to the folder) and either
   `emotion` (one of the seven) or `valence` and `energy` (0..1). The user's word beats any guess.
3. **genre** — the genre tag contains a known keyword (`GENRE_POINTS`): a rough point for that style.
4. otherwise the file is **unplaced**: listed by `emotune music validate` and never recommended (we do not
   guess a mood from nothing; add it to the sidecar).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from emotune.music.catalog import (
    CatalogError,
    canonical_emotion,
    line_numbers,
    numeric_column,
    read_table_csv,
    song_key,
    song_keys,
    track_table,
)

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".mp3", ".ogg", ".oga", ".opus", ".flac", ".wav", ".m4a", ".mp4", ".aac")
SIDECAR_NAME = "emotune_moods.csv"

# Rough typical (valence, energy) per style, after the genre means of large Spotify feature datasets;
# checked in order, so specific words come before general ones ("hard rock" before "rock").
GENRE_POINTS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("metal", (0.30, 0.90)),
    ("punk", (0.45, 0.90)),
    ("hard rock", (0.45, 0.85)),
    ("grunge", (0.35, 0.75)),
    ("techno", (0.40, 0.85)),
    ("edm", (0.50, 0.85)),
    ("house", (0.60, 0.80)),
    ("dance", (0.65, 0.75)),
    ("disco", (0.80, 0.75)),
    ("funk", (0.75, 0.65)),
    ("soul", (0.60, 0.50)),
    ("reggae", (0.75, 0.55)),
    ("latin", (0.70, 0.70)),
    ("hip hop", (0.55, 0.65)),
    ("hip-hop", (0.55, 0.65)),
    ("rap", (0.55, 0.65)),
    ("r&b", (0.55, 0.55)),
    ("country", (0.60, 0.55)),
    ("rock", (0.50, 0.70)),
    ("pop", (0.60, 0.65)),
    ("blues", (0.50, 0.45)),
    ("jazz", (0.55, 0.40)),
    ("folk", (0.45, 0.35)),
    ("acoustic", (0.45, 0.30)),
    ("ambient", (0.25, 0.20)),
    ("classical", (0.35, 0.20)),
    ("soundtrack", (0.30, 0.35)),
)

# Tag keys per container: easy/Vorbis/FLAC names, ID3 frames (WAV/AIFF keep raw ID3), MP4 atoms.
_TAG_KEYS = {
    "title": ("title", "TIT2", "\xa9nam"),
    "artist": ("artist", "TPE1", "\xa9ART"),
    "album": ("album", "TALB", "\xa9alb"),
    "genre": ("genre", "TCON", "\xa9gen"),
}


def _tag(tags: object, keys: tuple[str, ...]) -> str:
    if not tags:
        return ""
    for key in keys:
        try:
            value = tags.get(key)  # type: ignore[attr-defined]
        except (KeyError, ValueError):
            continue
        if value is None:
            continue
        value = getattr(value, "text", value)  # ID3 frames keep their strings in .text
        if isinstance(value, list | tuple):
            value = value[0] if value else ""
        if str(value).strip():
            return str(value).strip()
    return ""


def read_tags(path: Path) -> dict[str, object]:
    """title/artist/album/genre/duration of one audio file; the name `Artist - Title.ext` fills gaps."""
    import mutagen

    try:
        audio = mutagen.File(path, easy=True)
    except Exception as exc:  # mutagen raises many types for damaged files: skip the file, say why
        raise CatalogError(f"{path}: unreadable audio file ({exc})") from None
    if audio is None:
        raise CatalogError(f"{path}: not an audio format mutagen knows")
    info = {field: _tag(audio.tags, keys) for field, keys in _TAG_KEYS.items()}
    stem_artist, _, stem_title = path.stem.partition(" - ")
    if not info["title"]:
        info["title"] = stem_title.strip() if stem_title else path.stem
    if not info["artist"] and stem_title:
        info["artist"] = stem_artist.strip()
    info["duration"] = float(getattr(audio.info, "length", 0.0) or 0.0)
    return info


def scan_library(directory: Path | str) -> pd.DataFrame:
    """One row per audio file under `directory`: path (absolute), title, artist, album, genre, duration."""
    from tqdm import tqdm

    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise CatalogError(f"{directory}: music library folder not found; fix music.library_dir (or null)")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    rows = []
    for file in tqdm(files, desc="reading tags", unit="file", disable=len(files) < 200):
        try:
            rows.append({"path": str(file.resolve()), **read_tags(file)})
        except CatalogError as exc:
            log.warning("skipped: %s", exc)  # one damaged file must not hide the rest of the library
    return pd.DataFrame(rows, columns=["path", "title", "artist", "album", "genre", "duration"])


def read_sidecar(directory: Path) -> dict[str, tuple[float, float] | str]:
    """The library's emotune_moods.csv: absolute path -> (valence, energy) or an emotion label."""
    from emotune.labels import EMOTIONS

    file = Path(directory) / SIDECAR_NAME
    if not file.is_file():
        return {}
    raw = read_table_csv(file, "library sidecar", "", dtype=str, keep_default_na=False)
    columns = {str(c).strip().lower(): c for c in raw.columns}
    has_point = "valence" in columns and "energy" in columns
    if "path" not in columns or not ("emotion" in columns or has_point):
        raise CatalogError(
            f"{file}: needs a 'path' column and either 'emotion' or 'valence' and 'energy'; "
            f"found {', '.join(map(str, raw.columns))}"
        )
    frame = raw.rename(columns={v: k for k, v in columns.items()})
    if has_point:
        for column in ("valence", "energy"):
            frame[column] = numeric_column(frame.replace("", np.nan), column, column, file, required=False)
    placed: dict[str, tuple[float, float] | str] = {}
    for row, record in frame.iterrows():
        key = str((Path(directory) / record["path"].strip()).resolve())
        if has_point and not np.isnan(record["valence"]) and not np.isnan(record["energy"]):
            placed[key] = (float(record["valence"]), float(record["energy"]))
        elif str(record.get("emotion", "")).strip():
            try:
                placed[key] = canonical_emotion(record["emotion"])
            except ValueError:
                raise CatalogError(
                    f"{file}: {line_numbers([int(row)])}: emotion {record['emotion']!r} is not one of "
                    f"{', '.join(EMOTIONS)}"
                ) from None
        else:
            raise CatalogError(
                f"{file}: {line_numbers([int(row)])}: give an emotion or both valence and energy"
            )
    return placed


def genre_point(genre: str) -> tuple[float, float] | None:
    text = genre.lower()
    for word, point in GENRE_POINTS:
        if re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", text):
            return point
    return None


def place_library(
    library: pd.DataFrame,
    pool: pd.DataFrame,
    sidecar: dict[str, tuple[float, float] | str],
    targets: dict[str, tuple[float, float]],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """Merge library files into the pool (rules in the module docstring).

    Returns (pool with `path` filled for matched rows, new `source="library"` rows, paths by rule:
    {"match": [...], "sidecar": [...], "genre": [...], "unplaced": [...]}).
    """
    pool = pool.copy()
    placed: dict[str, list[str]] = {"match": [], "sidecar": [], "genre": [], "unplaced": []}
    keys = song_keys(pool)
    row_of = {key: i for i, key in zip(pool.index, keys, strict=True) if not pool.at[i, "path"]}
    new_rows = []
    for record in library.itertuples(index=False):
        key = song_key(record.artist, record.title)
        if record.artist and key in row_of:
            pool.at[row_of.pop(key), "path"] = record.path
            placed["match"].append(record.path)
            continue
        point, how = sidecar.get(record.path), "sidecar"
        if isinstance(point, str):
            point = targets[point]
        if point is None:
            point, how = genre_point(record.genre or ""), "genre"
        if point is None:
            placed["unplaced"].append(record.path)
            continue
        placed[how].append(record.path)
        new_rows.append(
            {
                "id": f"local:{record.path}",
                "name": record.title,
                "artist": record.artist or "unknown artist",
                "album": record.album,
                "genre": record.genre,
                "valence": point[0],
                "energy": point[1],
                "path": record.path,
                "source": "library",
            }
        )
    if placed["unplaced"]:
        log.warning(
            "library: %d files have no mood (no catalogue match, sidecar entry or known genre) and are not "
            "recommended; list them in %s",
            len(placed["unplaced"]),
            SIDECAR_NAME,
        )
    return pool, track_table(pd.DataFrame(new_rows)), placed
