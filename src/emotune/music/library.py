"""A local music library: a folder of the user's audio files, read with mutagen; they play in the page.

Placing a file in valence–energy space (first rule that applies wins):

1. **match** — its artist + title (tags, else "Artist - Title" file name) equal a catalogue row (or a
   playlist song when no catalogue is configured): that row becomes playable from the file.
2. **sidecar** — `emotune_moods.csv` in the library folder lists `path` (relative to the folder) and either
   `emotion` (one of the seven) or `valence` and `energy` (0..1). The user's word beats any guess.
3. **folder** — a folder on the file's way down from the library folder is named after an emotion
   (`sad/`, `Happy/`, `calm/` ...; `EMOTION_ALIASES`): that mood's target. The nearest such folder wins.
4. **genre** — the genre tag contains a known keyword (`GENRE_POINTS`): a rough point for that style.
5. otherwise the file is **unplaced**: counted in the log, listed by `emotune music validate` and never
   recommended (we do not guess a mood from nothing; `PLACEMENT_FIX` says how to place it).

Reading tags is the slow part of a big library (minutes for thousands of files on a slow disk), so a scan is
cached: `scan_library` keeps each file's tags in a JSON file under the user's cache folder
(`library_cache_path`: `$EMOTUNE_CACHE_DIR`, else `$XDG_CACHE_HOME/emotune`, else `~/.cache/emotune`; one
file per library folder, written atomically), keyed by the file's path, size and modification time. The next
scan reads only new or changed files; a damaged cache is ignored with a log line. The library folder itself is
never written to.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from emotune.atomic import atomic_output
from emotune.music.catalog import (
    EMOTION_ALIASES,
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
PLACEMENT_RULES = ("match", "sidecar", "folder", "genre")
CACHE_DIR_ENV = "EMOTUNE_CACHE_DIR"
CACHE_VERSION = 1
_TAG_FIELDS = ("title", "artist", "album", "genre")
# How to give an unplaced file a mood (the log, `emotune serve` and `emotune music validate` say it).
PLACEMENT_WAYS = (
    "a line in " + SIDECAR_NAME + " in the library folder: `path,emotion` (e.g. `{example},sad`) or "
    "`path,valence,energy` (values 0..1)",
    "a folder named after an emotion on its way: angry, disgust, fear, happy, sad, surprise, neutral "
    "(also calm, sadness, ...)",
    "a genre tag emotune knows: metal, punk, rock, pop, hip hop, jazz, folk, classical, ambient, ...",
    "artist and title tags of a catalogue track: the file then plays in that track's place",
)


def placement_fix(example: str = "Albums/song.mp3") -> list[str]:
    """PLACEMENT_WAYS, with `example` (a path relative to the library folder) in the sidecar line."""
    return [way.format(example=example) for way in PLACEMENT_WAYS]


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


def library_folder(path: Path | str) -> Path:
    """The library folder as an absolute path, or a CatalogError saying what is wrong with it (checked
    before a server starts, so a typo fails in a second rather than after the model has loaded)."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise CatalogError(f"{folder}: music folder not found; give an existing folder of audio files")
    if not folder.is_dir():
        raise CatalogError(f"{folder}: not a folder; give the folder that holds your audio files")
    try:
        with os.scandir(folder) as entries:
            next(entries, None)
    except OSError as exc:
        raise CatalogError(
            f"{folder}: the music folder cannot be read ({exc.strerror or exc}); check its permissions"
        ) from None
    return folder.resolve()


def cache_dir() -> Path:
    """Where emotune keeps caches: $EMOTUNE_CACHE_DIR, else $XDG_CACHE_HOME/emotune, else ~/.cache/emotune."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "emotune"


def library_cache_path(directory: Path | str) -> Path:
    """The scan cache of one library folder (named by a hash of its absolute path)."""
    digest = hashlib.sha256(str(Path(directory).expanduser().resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "library" / f"{digest}.json"


def _read_cache(path: Path, directory: Path) -> dict[str, dict]:
    """The cached entries {relative path: entry}, or {} when there is no usable cache (said in the log)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            raise ValueError(f"not a version {CACHE_VERSION} library cache")
        if data.get("folder") != str(directory):
            raise ValueError(f"it belongs to {data.get('folder')!r}")
        files = data.get("files")
        if not isinstance(files, dict):
            raise ValueError("no file list")
        return files
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning("%s: library scan cache ignored (%s); reading every file's tags again", path, exc)
        return {}


def _cached(entry: object, stat: os.stat_result) -> dict[str, object] | str | None:
    """A cache entry's tags (a dict) or its error (a str) when it describes this very file, else None."""
    if not isinstance(entry, dict) or entry.get("size") != stat.st_size:
        return None
    if entry.get("mtime_ns") != stat.st_mtime_ns:
        return None
    if isinstance(entry.get("error"), str):
        return entry["error"]
    tags = entry.get("tags")
    if not isinstance(tags, dict) or not all(isinstance(tags.get(f), str) for f in _TAG_FIELDS):
        return None
    if not isinstance(tags.get("duration"), int | float):
        return None
    return tags


def _write_cache(path: Path, directory: Path, files: dict[str, dict]) -> None:
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(
                json.dumps({"version": CACHE_VERSION, "folder": str(directory), "files": files}),
                encoding="utf-8",
            )
    except OSError as exc:  # a read-only home must not stop the music: the next start reads the tags again
        log.warning("%s: could not write the library scan cache (%s)", path, exc)


def scan_library(directory: Path | str, cache: bool = True) -> pd.DataFrame:
    """One row per audio file under `directory`: path (absolute), title, artist, album, genre, duration.

    With `cache`, tags come from the scan cache for files whose path, size and modification time are
    unchanged, and only the others are read (with a progress bar on stderr when there are many); the cache is
    rewritten when anything changed. Damaged files are skipped with a log line, and remembered as such.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise CatalogError(f"{directory}: music library folder not found; fix music.library_dir (or null)")
    directory = directory.resolve()
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    cache_path = library_cache_path(directory)
    old = _read_cache(cache_path, directory) if cache else {}
    entries: dict[str, dict] = {}
    found: dict[str, dict[str, object] | str] = {}
    todo: list[tuple[Path, str, os.stat_result]] = []
    for file in files:
        key = file.relative_to(directory).as_posix()
        stat = file.stat()
        hit = _cached(old.get(key), stat)
        if hit is None:
            todo.append((file, key, stat))
        else:
            found[key], entries[key] = hit, old[key]
    for file, key, stat in tqdm(
        todo, desc=f"reading tags in {directory}", unit="file", disable=len(todo) < 200, file=sys.stderr
    ):
        entry: dict[str, object] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        try:
            found[key] = entry["tags"] = read_tags(file)
        except CatalogError as exc:
            found[key] = entry["error"] = str(exc)
        entries[key] = entry
    rows, skipped = [], 0
    for file in files:
        info = found[file.relative_to(directory).as_posix()]
        if isinstance(info, str):
            log.warning("skipped: %s", info)  # one damaged file must not hide the rest of the library
            skipped += 1
        else:
            rows.append({"path": str(file.resolve()), **{k: info[k] for k in (*_TAG_FIELDS, "duration")}})
    if cache and (todo or set(old) != set(entries)):
        _write_cache(cache_path, directory, entries)
    log.info(
        "library %s: %d audio files (%d from the scan cache, %d read, %d unreadable) in %.1fs",
        directory,
        len(files),
        len(files) - len(todo),
        len(todo),
        skipped,
        time.perf_counter() - start,
    )
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


_SIDECAR_LOCK = threading.Lock()  # two listeners saving at once must not lose one of the lines


def set_sidecar_mood(directory: Path | str, path: Path | str, emotion: str) -> Path:
    """Say in the library's emotune_moods.csv that the audio file `path` feels `emotion` (one of EMOTIONS),
    replacing what the file said about it and keeping every other line; returns the sidecar's path.

    Only an existing audio file inside `directory` is accepted (CatalogError otherwise), so a caller that
    passes on a listener's choice cannot name anything else. The new file is written beside the old one and
    moved over it, so a failure half-way leaves the old sidecar as it was.
    """
    from emotune.labels import EMOTIONS

    if str(emotion) not in EMOTIONS:
        raise CatalogError(f"emotion {emotion!r} is not one of {', '.join(EMOTIONS)}")
    folder = Path(directory).expanduser().resolve()
    file = Path(path).expanduser().resolve()
    if not file.is_relative_to(folder) or file.suffix.lower() not in AUDIO_SUFFIXES or not file.is_file():
        raise CatalogError(f"{path}: not an audio file of the music folder {folder}")
    sidecar = folder / SIDECAR_NAME
    with _SIDECAR_LOCK:
        header, rows = ["path", "emotion"], []
        if sidecar.is_file():
            read_sidecar(folder)  # a broken sidecar is reported, not overwritten
            with open(sidecar, encoding="utf-8-sig", newline="") as f:
                reader = csv.DictReader(f)
                header = [str(c) for c in reader.fieldnames or []]
                rows = list(reader)
        columns = {c.strip().lower(): c for c in header}
        if "emotion" not in columns:
            header.append("emotion")
            columns["emotion"] = "emotion"
        path_column = columns["path"]
        # The file's own lines go (a point, valence and energy, would beat the emotion); its new line is last.
        rows = [r for r in rows if (folder / (r.get(path_column) or "").strip()).resolve() != file]
        rows.append({path_column: file.relative_to(folder).as_posix(), columns["emotion"]: emotion})
        try:
            with atomic_output(sidecar) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
                writer = csv.DictWriter(out, header, restval="", lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
        except UnicodeEncodeError:  # a file name that is not UTF-8 (Linux allows any bytes)
            raise CatalogError(f"{path}: its name is not UTF-8 text and cannot go in {sidecar}") from None
    log.info("%s: %s feels %s", sidecar, file.relative_to(folder), emotion)
    return sidecar


def genre_point(genre: str) -> tuple[float, float] | None:
    text = genre.lower()
    for word, point in GENRE_POINTS:
        if re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", text):
            return point
    return None


def folder_emotion(path: str, root: Path | None) -> str | None:
    """The emotion named by the nearest folder between `root` and the file (`sad/`, `Happy/`, `calm/`)."""
    if root is None:
        return None
    try:
        folders = Path(path).relative_to(root).parts[:-1]
    except ValueError:  # a file linked in from outside the library folder
        return None
    for name in reversed(folders):
        emotion = EMOTION_ALIASES.get(name.strip().lower())
        if emotion:
            return emotion
    return None


def place_library(
    library: pd.DataFrame,
    pool: pd.DataFrame,
    sidecar: dict[str, tuple[float, float] | str],
    targets: dict[str, tuple[float, float]],
    root: Path | str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """Merge library files into the pool (rules in the module docstring; `root`, the library folder, enables
    the folder rule).

    Returns (pool with `path` filled for matched rows, new `source="library"` rows, paths by rule:
    {"match": [...], "sidecar": [...], "folder": [...], "genre": [...], "unplaced": [...]}).
    """
    pool = pool.copy()
    root = Path(root).expanduser().resolve() if root is not None else None
    placed: dict[str, list[str]] = {how: [] for how in (*PLACEMENT_RULES, "unplaced")}
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
        if point is None:
            point, how = folder_emotion(record.path, root), "folder"
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
            "library: %d of %d files have no mood and are not recommended (`emotune music validate "
            "--music-dir DIR` lists them). Give each one of: %s",
            len(placed["unplaced"]),
            len(library),
            "; ".join(placement_fix()),
        )
    return pool, track_table(pd.DataFrame(new_rows)), placed
