"""Catalogues of tracks: per-emotion playlist files and feature catalogues (CSV with valence/energy).

Both load into one normalised table (`TRACK_COLUMNS`) that the recommender indexes once. Every
validation error is a `CatalogError` naming the file, the column and the CSV lines, and how to fix it.

The default configuration's catalogue ships in the package (`BUILTIN_CATALOG`, `music.catalog_path: builtin`):
686 tracks with Spotify ids and audio features, derived by `build_catalog` (`emotune music build-catalog`)
from the public `data_moods.csv`; `annotate_playlists` gives the built-in lists' songs that are in it their
Spotify ids and features. Where it comes from and its terms: `tracks/README.md`.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emotune.atomic import atomic_output
from emotune.labels import EMOTIONS

log = logging.getLogger(__name__)

DEFAULT_PLAYLISTS_DIR = Path(__file__).resolve().parent / "playlists"
BUILTIN = "builtin"  # music.catalog_path value for the catalogue shipped in the package
BUILTIN_CATALOG = Path(__file__).resolve().parent / "tracks" / "tracks.csv.gz"
# The columns the built-in catalogue keeps from its source, in this order (everything the recommender reads).
BUILTIN_COLUMNS = (
    "id",
    "name",
    "artist",
    "album",
    "genre",
    "popularity",
    "valence",
    "energy",
    "danceability",
    "tempo",
)
# Audio features a playlist file may carry beside Name,Album,Artist (popularity on Spotify's 0..100 scale).
PLAYLIST_FEATURES = ("valence", "energy", "tempo", "popularity")

# The normalised table every source is turned into (one row per playable song).
TRACK_COLUMNS = (
    "id",  # stable key used for "recently played" exclusion
    "name",
    "artist",
    "album",
    "genre",
    "popularity",  # 0..1, NaN when unknown
    "valence",  # 0..1
    "energy",  # 0..1
    "tempo",
    "danceability",
    "spotify_id",  # "" when unknown
    "path",  # absolute path of a local audio file, "" when none
    "source",  # catalog | playlist | library
    "emotion",  # the playlist's emotion ("" for catalogue rows)
)

# Canonical feature-catalogue columns: the names music.catalog_columns maps from.
CATALOG_REQUIRED = ("valence", "energy")
CATALOG_OPTIONAL = ("id", "name", "artist", "album", "genre", "popularity", "tempo", "danceability")
# Allowed value ranges of numeric columns (None = unbounded).
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "valence": (0.0, 1.0),
    "energy": (0.0, 1.0),
    "danceability": (0.0, 1.0),
    "popularity": (0.0, 100.0),
    "tempo": (0.0, None),
}

# File names people use for the seven classes (the seed project used adjectives: sad/disgusted/...).
EMOTION_ALIASES: dict[str, str] = {
    **{e: e for e in EMOTIONS},
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "scared": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "calm": "neutral",
}

_SPOTIFY_ID = re.compile(r"^[0-9A-Za-z]{22}$")
_SPOTIFY_REF = re.compile(
    r"(?:spotify:track:|open\.spotify\.com/(?:intl-[a-z]+/)?(?:embed/)?track/)([0-9A-Za-z]{22})"
)
_PLAYLIST_ID_COLUMNS = ("spotify_id", "spotify", "spotify_url", "url", "uri")
_MAX_LISTED = 5


class CatalogError(ValueError):
    """A catalogue, playlist or library file that cannot be used as it is (the message says how to fix it)."""


# ---------------------------------------------------------------------------------------------- helpers


def canonical_emotion(name: str) -> str:
    """'sad', 'Sadness', 'disgusted' -> the EMOTIONS label; ValueError for anything else."""
    key = str(name).strip().lower()
    if key not in EMOTION_ALIASES:
        raise ValueError(f"unknown emotion {name!r}: use one of {', '.join(EMOTIONS)}")
    return EMOTION_ALIASES[key]


def text_key(text: object) -> str:
    """Comparable form of a title: case/accents/punctuation and '(Remastered)', '- Live', 'feat.' dropped."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    text = unicodedata.normalize("NFKD", str(text)).casefold()
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"\(.*?\)|\[.*?\]", " ", text)
    text = re.sub(r"\s-\s.*$", " ", text)
    text = re.sub(r"\b(?:feat|ft|featuring)\b.*$", " ", text)
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def artist_key(artist: object) -> str:
    """The primary artist, comparable: 'Mark Ronson;Bruno Mars' -> 'mark ronson'."""
    return text_key(str(artist).split(";")[0]) if isinstance(artist, str) else ""


def song_key(artist: str, name: str) -> str:
    """Artist and title, comparable: what makes two rows of different files the same song."""
    return f"{artist_key(artist)}\0{text_key(name)}"


def song_keys(frame: pd.DataFrame) -> pd.Series:
    """`song_key` of every row of a frame with `artist` and `name` columns."""
    keys = [song_key(a, n) for a, n in zip(frame["artist"], frame["name"], strict=True)]
    return pd.Series(keys, index=frame.index, dtype=object)


def track_id(artist: str, name: str) -> str:
    """A stable id for a song without one: the same song in two files gets the same id."""
    digest = hashlib.sha1(song_key(artist, name).encode()).hexdigest()
    return f"t:{digest[:16]}"


def parse_spotify_track(value: object) -> str:
    """A bare id, `spotify:track:ID` or an open.spotify.com track URL -> the 22-character id ('' if empty)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
        return ""
    text = str(value).strip()
    if _SPOTIFY_ID.match(text):
        return text
    match = _SPOTIFY_REF.search(text)
    if not match:
        raise ValueError(f"{text!r} is not a Spotify track id, spotify:track: URI or track URL")
    return match.group(1)


def is_spotify_id(value: str) -> bool:
    return bool(_SPOTIFY_ID.match(value or ""))


def line_numbers(rows: Iterable[int]) -> str:
    """0-based data rows -> 'lines 3, 7 (and 2 more)' (line 1 is the header)."""
    rows = list(rows)
    shown = ", ".join(str(r + 2) for r in rows[:_MAX_LISTED])
    more = f" (and {len(rows) - _MAX_LISTED} more)" if len(rows) > _MAX_LISTED else ""
    return f"line{'s' if len(rows) > 1 else ''} {shown}{more}"


def read_table_csv(path: Path, what: str, fix: str, **kwargs: Any) -> pd.DataFrame:
    """pd.read_csv(path, **kwargs) with at least one row, or a CatalogError naming the file (`what` it is, and
    the `fix` for a missing one)."""
    if not path.is_file():
        raise CatalogError(f"{path}: {what} not found. {fix}")
    try:
        frame = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise CatalogError(
            f"{path}: the file is empty; a header line and at least one row are needed"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise CatalogError(f"{path}: not a readable CSV file ({exc})") from None
    if frame.empty:
        raise CatalogError(f"{path}: no rows under the header ({', '.join(map(str, frame.columns))})")
    return frame


def numeric_column(frame: pd.DataFrame, column: str, source: str, path: Path, required: bool) -> pd.Series:
    """The column as floats; errors name the lines with text, blanks (if required) or out-of-range values."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").astype("float64")
    bad = np.flatnonzero(values.isna().to_numpy() & raw.notna().to_numpy())
    if bad.size:
        raise CatalogError(
            f"{path}: column {source!r} ({column}) has values that are not numbers on {line_numbers(bad)} "
            f"(e.g. {raw.iloc[bad[0]]!r}); fix those rows or map another column in music.catalog_columns"
        )
    missing = np.flatnonzero(values.isna().to_numpy())
    if required and missing.size:
        raise CatalogError(
            f"{path}: column {source!r} ({column}) is empty on {line_numbers(missing)}; fill or drop them"
        )
    low, high = _RANGES.get(column, (None, None))
    outside = np.zeros(len(values), dtype=bool)
    if low is not None:
        outside |= (values < low).to_numpy()
    if high is not None:
        outside |= (values > high).to_numpy()
    bad = np.flatnonzero(outside)
    if bad.size:
        span = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise CatalogError(
            f"{path}: column {source!r} ({column}) must be in {span}; {line_numbers(bad)} "
            f"(e.g. {values.iloc[bad[0]]:g}) are outside"
        )
    return values


def _strings(series: pd.Series) -> pd.Series:
    return series.fillna("").astype(str).str.strip()


def track_table(frame: pd.DataFrame) -> pd.DataFrame:
    """All TRACK_COLUMNS present, in order, with their types."""
    for column in TRACK_COLUMNS:
        if column not in frame:
            frame[column] = (
                np.nan if column in ("popularity", "valence", "energy", "tempo", "danceability") else ""
            )
    frame = frame[list(TRACK_COLUMNS)].reset_index(drop=True)
    for column in ("popularity", "valence", "energy", "tempo", "danceability"):
        frame[column] = frame[column].astype("float64")
    return frame


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Write next to the target and rename: a crash never leaves half a file behind."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        frame.to_csv(handle, index=False)
    return Path(path)


# ---------------------------------------------------------------------------------------- feature catalogue


def load_feature_catalog(path: Path | str, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read a CSV (optionally .gz) of tracks with audio features into TRACK_COLUMNS.

    `columns` maps canonical names (valence, energy, id, name, artist, album, genre, popularity, tempo,
    danceability) to the file's own column names; unmapped names are looked up as they are. Rows repeating
    an id, or the same artist+title (e.g. one song listed under several genres), keep the most popular copy.
    """
    path = Path(path)
    mapping = {key: str(value) for key, value in dict(columns or {}).items()}
    unknown = sorted(set(mapping) - set(CATALOG_REQUIRED) - set(CATALOG_OPTIONAL))
    if unknown:
        raise CatalogError(
            f"music.catalog_columns has unknown keys {unknown}; "
            f"allowed: {', '.join(CATALOG_REQUIRED + CATALOG_OPTIONAL)}"
        )
    header = read_table_csv(
        path, "feature catalogue", "Set music.catalog_path (or `dvc pull` the data/).", nrows=1
    )
    present = set(header.columns)
    source = {key: mapping.get(key, key) for key in CATALOG_REQUIRED + CATALOG_OPTIONAL}
    for key in CATALOG_REQUIRED:
        if source[key] not in present:
            raise CatalogError(
                f"{path}: required column {source[key]!r} ({key}) is missing; columns are "
                f"{', '.join(map(str, header.columns))}. Map yours with music.catalog_columns.{key}=<column>"
            )
    for key, name in mapping.items():
        if name not in present:
            raise CatalogError(f"{path}: music.catalog_columns.{key}={name!r} is not a column of this file")
    used = {key: name for key, name in source.items() if name in present}
    raw = read_table_csv(path, "feature catalogue", "", usecols=sorted(set(used.values())))

    frame = pd.DataFrame(index=raw.index)
    for key, name in used.items():
        if key in _RANGES:
            frame[key] = numeric_column(raw, name, name, path, required=key in CATALOG_REQUIRED)
        else:
            frame[key] = _strings(raw[name])
    if "popularity" in frame and frame["popularity"].max() > 1.0:
        frame["popularity"] = frame["popularity"] / 100.0  # Spotify's 0..100 scale
    if "name" not in frame:
        frame["name"] = frame["id"] if "id" in frame else [f"track {i + 1}" for i in range(len(frame))]
    if "artist" not in frame:
        frame["artist"] = ""
    ids = frame["id"] if "id" in frame else pd.Series("", index=frame.index)
    frame["id"] = [i or track_id(a, n) for i, a, n in zip(ids, frame["artist"], frame["name"], strict=True)]
    frame["spotify_id"] = [i if is_spotify_id(i) else "" for i in frame["id"]]
    frame["source"] = "catalog"
    return _dedupe(track_table(frame), path)


def _dedupe(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    before = len(frame)
    order = frame["popularity"].fillna(-1.0).to_numpy().argsort(kind="stable")[::-1]
    ranked = frame.iloc[order]
    keys = song_keys(ranked)
    keep = ~ranked["id"].duplicated() & ~(keys.duplicated() & (keys != "\0"))
    frame = ranked[keep.to_numpy()].sort_index().reset_index(drop=True)
    if len(frame) < before:
        log.info("%s: %d repeated tracks (same id or artist+title) dropped", path, before - len(frame))
    return frame


# ------------------------------------------------------------------------------------------ playlist files


def load_playlist_file(path: Path | str, emotion: str) -> pd.DataFrame:
    """One `Name,Album,Artist[,spotify_id][,path]` file (a leading unnamed index column is ignored).

    Optional columns `valence, energy, tempo, popularity` (blank where unknown) carry a song's Spotify audio
    features; in playlists mode a song still sits at its list's target, and popularity feeds the prior.
    """
    path = Path(path)
    raw = read_table_csv(path, "playlist file", "", dtype=str, keep_default_na=False)
    columns = {str(c).strip().lower(): c for c in raw.columns}
    for required in ("name", "artist"):
        if required not in columns:
            raise CatalogError(
                f"{path}: required column {required.capitalize()!r} is missing; a playlist file has the "
                f"header Name,Album,Artist (optional: spotify_id, path). "
                f"Found: {', '.join(map(str, raw.columns))}"
            )
    frame = pd.DataFrame(
        {
            "name": _strings(raw[columns["name"]]),
            "artist": _strings(raw[columns["artist"]]),
            "album": _strings(raw[columns["album"]]) if "album" in columns else "",
        }
    )
    blank = np.flatnonzero(((frame["name"] == "") | (frame["artist"] == "")).to_numpy())
    if blank.size:
        raise CatalogError(
            f"{path}: Name or Artist is empty on {line_numbers(blank)}; fill them or delete those rows"
        )
    for feature in PLAYLIST_FEATURES:  # optional, blank where unknown
        if feature in columns:
            text = raw[columns[feature]].str.strip()
            values = pd.DataFrame({feature: text.mask(text == "")})
            frame[feature] = numeric_column(values, feature, str(columns[feature]), path, required=False)
    if "popularity" in frame:
        frame["popularity"] = frame["popularity"] / 100.0  # Spotify's 0..100, as the catalogue has it

    id_column = next((columns[c] for c in _PLAYLIST_ID_COLUMNS if c in columns), None)
    spotify = []
    for row, value in enumerate(raw[id_column] if id_column is not None else [""] * len(raw)):
        try:
            spotify.append(parse_spotify_track(value))
        except ValueError as exc:
            raise CatalogError(f"{path}: column {id_column!r}, {line_numbers([row])}: {exc}") from None
    frame["spotify_id"] = spotify

    paths = []
    for row, value in enumerate(raw[columns["path"]] if "path" in columns else [""] * len(raw)):
        value = str(value).strip()
        if value:
            audio = (path.parent / value).expanduser().resolve()
            if not audio.is_file():
                raise CatalogError(
                    f"{path}: column 'path', {line_numbers([row])}: audio file {value!r} not found "
                    f"(relative paths are relative to {path.parent})"
                )
            value = str(audio)
        paths.append(value)
    frame["path"] = paths

    frame["id"] = [
        s or track_id(a, n)
        for s, a, n in zip(frame["spotify_id"], frame["artist"], frame["name"], strict=True)
    ]
    repeated = np.flatnonzero(frame["id"].duplicated().to_numpy())
    if repeated.size:
        raise CatalogError(
            f"{path}: the same song is listed twice ({line_numbers(repeated)}); delete the repeats"
        )
    frame["source"] = "playlist"
    frame["emotion"] = emotion
    return track_table(frame)


def load_playlists(directory: Path | str | None = None) -> pd.DataFrame:
    """All `<emotion>.csv` files of a folder (default: the lists shipped with emotune) in one table."""
    directory = Path(directory) if directory is not None else DEFAULT_PLAYLISTS_DIR
    if not directory.is_dir():
        raise CatalogError(
            f"{directory}: playlist folder not found; set music.playlists_dir (null = built-in)"
        )
    files = sorted(
        p for p in directory.iterdir() if p.suffix.lower() == ".csv" and not p.name.startswith(".")
    )
    if not files:
        raise CatalogError(f"{directory}: no playlist files; add <emotion>.csv files ({', '.join(EMOTIONS)})")
    frames: dict[str, pd.DataFrame] = {}
    seen: dict[str, Path] = {}
    for file in files:
        try:
            emotion = canonical_emotion(file.stem)
        except ValueError:
            raise CatalogError(
                f"{file}: {file.stem!r} is not an emotion; name playlist files after one of "
                f"{', '.join(EMOTIONS)} (e.g. sad.csv)"
            ) from None
        if emotion in seen:
            raise CatalogError(
                f"{file}: a second playlist for {emotion!r} (first: {seen[emotion].name}); keep one"
            )
        seen[emotion] = file
        frames[emotion] = load_playlist_file(file, emotion)
    missing = [e for e in EMOTIONS if e not in frames]
    if missing:
        log.warning(
            "%s: no playlist for %s; the nearest moods' lists stand in", directory, ", ".join(missing)
        )
    return pd.concat([frames[e] for e in EMOTIONS if e in frames], ignore_index=True)


# ------------------------------------------------------------------------------ the built-in catalogue


def build_catalog(source: Path | str, out: Path | str = BUILTIN_CATALOG) -> pd.DataFrame:
    """Derive the compact catalogue from a Spotify feature CSV (the public `data_moods.csv[.gz]`).

    The source is validated as a catalogue first (so the result loads); then only `BUILTIN_COLUMNS` are kept,
    with the source's own text for every value (no float re-rounding), rows in the source's order, repeats
    dropped as `load_feature_catalog` drops them, the literal genre "N/A" left blank. Written as gzip with no
    name or time in its header, so the same source gives the same bytes. Returns the loaded result.
    """
    source, out = Path(source), Path(out)
    valid = load_feature_catalog(source)
    raw = read_table_csv(source, "source catalogue", "", dtype=str, keep_default_na=False)
    missing = [c for c in BUILTIN_COLUMNS if c not in raw.columns]
    if missing:
        raise CatalogError(
            f"{source}: columns {', '.join(missing)} are missing; the built-in catalogue keeps "
            f"{', '.join(BUILTIN_COLUMNS)}"
        )
    kept = raw.loc[raw["id"].isin(set(valid["id"])) & ~raw["id"].duplicated(), list(BUILTIN_COLUMNS)]
    kept = kept.apply(lambda column: column.str.strip())
    kept.loc[kept["genre"].str.upper() == "N/A", "genre"] = ""
    text = kept.to_csv(index=False, lineterminator="\n").encode("utf-8")
    # No file name and time 0 in the gzip header (like `gzip -n`): the same source, the same bytes.
    with (
        atomic_output(out) as tmp,
        open(tmp, "wb") as handle,
        gzip.GzipFile(filename="", mode="wb", fileobj=handle, compresslevel=9, mtime=0) as packed,
    ):
        packed.write(text)
    frame = load_feature_catalog(out)
    log.info("%s: %d tracks from %s", out, len(frame), source)
    return frame


def _number_text(value: float) -> str:
    """The shortest text that reads back as the same float ('' for NaN, no '.0' on whole numbers)."""
    if pd.isna(value):
        return ""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def annotate_playlists(catalog: pd.DataFrame, directory: Path | str | None = None) -> dict[str, int]:
    """Give playlist songs that are catalogue rows (same artist and title) their Spotify id and features.

    Rewrites each `<emotion>.csv` of `directory` (default: the built-in lists) with the columns `spotify_id`
    and `PLAYLIST_FEATURES`; other columns and rows stay as they were. A song whose file already names a
    different Spotify id keeps it, and its features are left alone. Returns {file name: songs matched}.
    """
    directory = Path(directory) if directory is not None else DEFAULT_PLAYLISTS_DIR
    rows = {key: row for key, row in zip(song_keys(catalog), catalog.to_dict("records"), strict=True)}
    matched: dict[str, int] = {}
    for file in sorted(p for p in directory.glob("*.csv") if not p.name.startswith(".")):
        emotion = canonical_emotion(file.stem)
        raw = read_table_csv(file, "playlist file", "", dtype=str, keep_default_na=False)
        columns = {str(c).strip().lower(): c for c in raw.columns}
        id_column = next((columns[c] for c in _PLAYLIST_ID_COLUMNS if c in columns), "spotify_id")
        for column in (id_column, *PLAYLIST_FEATURES):
            if column not in raw:
                raw[column] = ""
        keys = [song_key(a, n) for a, n in zip(raw[columns["artist"]], raw[columns["name"]], strict=True)]
        count = 0
        for index, key in zip(raw.index, keys, strict=True):
            row = rows.get(key)
            if row is None or not row["spotify_id"]:
                continue
            have = parse_spotify_track(raw.at[index, id_column])
            if have and have != row["spotify_id"]:
                continue
            raw.at[index, id_column] = row["spotify_id"]
            for feature in PLAYLIST_FEATURES:
                value = row[feature]
                if feature == "popularity" and not pd.isna(value):
                    value = round(value * 100.0, 6)  # back to Spotify's 0..100
                raw.at[index, feature] = _number_text(value)
            count += 1
        write_csv_atomic(raw, file)
        load_playlist_file(file, emotion)  # what was written still loads
        matched[file.name] = count
    return matched
