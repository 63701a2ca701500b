"""CLI: `emotune recommend`, `emotune music validate | build-catalog | download | spotify-refresh`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from emotune import kaggle
from emotune.atomic import atomic_output
from emotune.labels import EMOTIONS

KAGGLE_DATASET = "maharshipandya/-spotify-tracks-dataset"  # ~114k tracks with audio features
KAGGLE_FILE = "dataset.csv"
DOWNLOAD_OUT = "data/music/spotify_tracks.csv"  # what conf/music/spotify_tracks.yaml reads
CATALOG_SOURCE = "data/music/data_moods.csv.gz"  # where docs/data.md puts the public data_moods.csv
UNPLACED_LISTED = 20  # `music validate` lists this many unplaced files (all of them with --json)


def _music_cfg(overrides: list[str], music_dir: str | None = None) -> Any:
    """cfg.music composed with the overrides; --music-dir (checked first) becomes music.library_dir."""
    from emotune.config import compose
    from emotune.music.library import library_folder

    folder = library_folder(music_dir) if music_dir else None
    music = compose(overrides).music
    if folder is not None:
        music.library_dir = str(folder)
    return music


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _errors() -> tuple[type[Exception], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from emotune.music.catalog import CatalogError
    from emotune.music.spotify import SpotifyError

    return (
        CatalogError,
        SpotifyError,
        kaggle.KaggleError,
        ValueError,
        HydraException,
        OmegaConfBaseException,
    )


def parse_probs(text: str) -> list[float]:
    try:
        probs = [float(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--probs takes {len(EMOTIONS)} comma-separated numbers ({','.join(EMOTIONS)})"
        ) from None
    if len(probs) != len(EMOTIONS):
        raise ValueError(
            f"--probs needs {len(EMOTIONS)} numbers in the order {','.join(EMOTIONS)}, got {len(probs)}"
        )
    return probs


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(tracks: list[Any]) -> str:
    lines = [f"{'#':>2}  {'artist':<24} {'title':<34} {'val':>4} {'nrg':>4}  {'play':<7} link"]
    for i, t in enumerate(tracks, 1):
        link = t.play.path if t.play.kind == "local" else t.play.url
        lines.append(
            f"{i:>2}  {_cut(t.artist, 24):<24} {_cut(t.name, 34):<34} {t.valence:>4.2f} {t.energy:>4.2f}  "
            f"{t.play.kind:<7} {link}"
        )
    return "\n".join(lines)


def _recommend(args: Any) -> int:
    from emotune.music.recommender import Recommender

    try:
        mood = args.emotion if args.emotion else parse_probs(args.probs)
        recommender = Recommender.from_config(_music_cfg(args.overrides, args.music_dir))
        exclude = [i for i in (args.exclude or "").split(",") if i]
        tracks = recommender.recommend(
            mood, strategy=args.strategy, k=args.k, exclude=exclude, seed=args.seed
        )
    except _errors() as exc:
        return _fail(exc)
    if args.json:
        target = recommender.target(mood)
        print(
            json.dumps(
                {
                    "target": {"valence": target[0], "energy": target[1]},
                    "tracks": [t.to_dict() for t in tracks],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        valence, energy = recommender.target(mood)
        print(
            f"mood target: valence {valence:.2f}, energy {energy:.2f} ({recommender.mode} mode, "
            f"{len(recommender.tracks)} tracks)"
        )
        print(format_table(tracks))
    return 0


def unplaced_report(unplaced: list[str], root: str | Path, listed: int = UNPLACED_LISTED) -> list[str]:
    """The lines `emotune music validate` prints about library files without a mood: how many, the ways to
    place one, and the first `listed` of them."""
    from emotune.music.library import placement_fix

    if not unplaced:
        return []
    try:
        example = Path(unplaced[0]).relative_to(root).as_posix()
    except ValueError:
        example = Path(unplaced[0]).name
    count = f"{len(unplaced)} file has" if len(unplaced) == 1 else f"{len(unplaced)} files have"
    lines = [f"unplaced: {count} no mood and will not be recommended. Give each one of:"]
    lines += [f"  - {way}" for way in placement_fix(example)]
    lines += [f"  unplaced: {path}" for path in unplaced[:listed]]
    if len(unplaced) > listed:
        lines.append(f"  ... and {len(unplaced) - listed} more (--json lists them all)")
    return lines


def _validate(args: Any) -> int:
    from emotune.music.library import placement_fix
    from emotune.music.recommender import Recommender, resolve_path

    try:
        music = _music_cfg(args.overrides, args.music_dir)
        recommender = Recommender.from_config(music)
    except _errors() as exc:
        return _fail(exc)
    summary = recommender.summary()
    unplaced = recommender.library.get("unplaced", [])
    if args.json:
        if recommender.library:
            summary["unplaced"] = unplaced
            summary["how_to_place"] = placement_fix() if unplaced else []
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
        root = resolve_path(music.library_dir).resolve() if music.get("library_dir") else Path()
        for line in unplaced_report(unplaced, root):
            print(line)
    return 0


def _build_catalog(args: Any) -> int:
    from emotune.music.catalog import BUILTIN_CATALOG, annotate_playlists, build_catalog

    out = Path(args.out) if args.out else BUILTIN_CATALOG
    try:
        catalog = build_catalog(args.source, out)
        matched = {} if args.no_playlists else annotate_playlists(catalog, args.playlists)
    except _errors() as exc:
        return _fail(exc)
    print(f"wrote {out}: {len(catalog)} tracks from {args.source}")
    if matched:
        counts = ", ".join(f"{name} {n}" for name, n in matched.items())
        print(f"playlist songs given their Spotify id and features: {sum(matched.values())} ({counts})")
    return 0


def download_catalog(
    dataset: str = KAGGLE_DATASET, filename: str = KAGGLE_FILE, out: str | Path = DOWNLOAD_OUT
) -> Path:
    """Fetch one CSV of a Kaggle dataset with kagglehub and place it at `out` (atomically)."""
    try:
        cached = kaggle.fetch("dataset", dataset, path=filename)
    except kaggle.KaggleError as exc:
        raise kaggle.KaggleError(
            f"{exc}. Copy a catalogue CSV to {out} by hand, or set music.catalog_path"
        ) from None
    out = Path(out)
    with atomic_output(out) as tmp, cached.open("rb") as source, open(tmp, "wb") as copy:
        shutil.copyfileobj(source, copy)
    return out


def _download(args: Any) -> int:
    try:
        out = download_catalog(args.dataset, args.file, args.out)
    except kaggle.KaggleError as exc:
        return _fail(exc)
    print(
        f"wrote {out}. Use it: emotune recommend --emotion happy music=spotify_tracks "
        f"(version it: dvc add data)"
    )
    return 0


def _spotify_refresh(args: Any) -> int:
    from emotune.music.catalog import DEFAULT_PLAYLISTS_DIR
    from emotune.music.recommender import resolve_path
    from emotune.music.spotify import refresh_playlist

    try:
        configured = _music_cfg([]).get("playlists_dir")
        directory = (
            Path(args.dir)
            if args.dir
            else (resolve_path(configured) if configured else DEFAULT_PLAYLISTS_DIR)
        )
        path = refresh_playlist(args.playlist, args.emotion, directory)
    except _errors() as exc:
        return _fail(exc)
    print(f"wrote {path}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("recommend", help="a playlist for an emotion or a 7-probability vector")
    mood = p.add_mutually_exclusive_group(required=True)
    mood.add_argument("--emotion", help=f"one of {', '.join(EMOTIONS)}")
    mood.add_argument("--probs", help=f"{len(EMOTIONS)} comma-separated probabilities: {','.join(EMOTIONS)}")
    p.add_argument("--strategy", choices=("match", "uplift"), help="default: music.strategy")
    p.add_argument("-k", type=int, help="number of tracks (default: music.k)")
    p.add_argument("--seed", type=int, help="default: music.seed")
    p.add_argument("--exclude", help="comma-separated track ids played recently")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--music-dir", metavar="PATH", help="a folder of your own audio files (music.library_dir)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. music=playlists music.k=5")
    p.set_defaults(func=_recommend)

    music = sub.add_parser("music", help="music catalogues: validate, download, Spotify refresh")
    cmds = music.add_subparsers(dest="music_command", required=True)
    v = cmds.add_parser("validate", help="load and check the configured catalogue, playlists and library")
    v.add_argument("--json", action="store_true")
    v.add_argument("--music-dir", metavar="PATH", help="a folder of your own audio files (music.library_dir)")
    v.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. music=playlists")
    v.set_defaults(func=_validate)

    b = cmds.add_parser(
        "build-catalog",
        help="derive the built-in catalogue (music.catalog_path: builtin) from data_moods.csv",
        description="Keeps the columns the recommender reads, with the source's values, as a reproducible "
        "gzip; then gives the playlist songs that are catalogue rows their Spotify ids and features.",
    )
    b.add_argument(
        "--source", default=CATALOG_SOURCE, help=f"the source CSV(.gz) (default: {CATALOG_SOURCE})"
    )
    b.add_argument("--out", help="the catalogue to write (default: the built-in one)")
    b.add_argument("--playlists", help="playlist folder to annotate (default: the built-in lists)")
    b.add_argument("--no-playlists", action="store_true", help="leave the playlist files as they are")
    b.set_defaults(func=_build_catalog)

    d = cmds.add_parser("download", help="fetch a Kaggle catalogue of tracks with audio features (kagglehub)")
    d.add_argument("--dataset", default=KAGGLE_DATASET, help="Kaggle dataset handle owner/name")
    d.add_argument("--file", default=KAGGLE_FILE, help="the CSV inside the dataset")
    d.add_argument("--out", default=DOWNLOAD_OUT)
    d.set_defaults(func=_download)

    s = cmds.add_parser("spotify-refresh", help="replace an emotion's playlist file with a Spotify playlist")
    s.add_argument("--playlist", required=True, help="playlist URL, spotify:playlist: URI or id")
    s.add_argument("--emotion", required=True, help=f"one of {', '.join(EMOTIONS)}")
    s.add_argument(
        "--dir", help="playlist folder to write (default: music.playlists_dir or the built-in one)"
    )
    s.set_defaults(func=_spotify_refresh)
