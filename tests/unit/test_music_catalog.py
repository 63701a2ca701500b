"""Catalogue loading and validation: errors name file, column and line; the real 686-track catalogue."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emotune.cli import main
from emotune.labels import EMOTIONS
from emotune.music import CatalogError, Recommender, load_feature_catalog, load_playlists
from emotune.music.catalog import (
    BUILTIN_CATALOG,
    BUILTIN_COLUMNS,
    DEFAULT_PLAYLISTS_DIR,
    PLAYLIST_FEATURES,
    annotate_playlists,
    build_catalog,
    load_playlist_file,
    parse_spotify_track,
    song_keys,
)

HEADER = "id,name,artist,popularity,valence,energy\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_mapped_columns_and_normalises(tmp_path):
    path = tmp_path / "tracks.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("track_id,title,who,pop,v,e,tempo\n")
        handle.write("4uLU6hMCjMI75M1A2tKUQC,Song A,Ann,80,0.9,0.8,120\n")
        handle.write("local-2,Song B,Bob;Carl,20,0.1,0.2,90\n")
        handle.write(",Song A (Remastered 2011),ann,10,0.5,0.5,100\n")  # the same song again, less popular
    columns = {"id": "track_id", "name": "title", "artist": "who", "popularity": "pop"}
    columns |= {"valence": "v", "energy": "e"}
    frame = load_feature_catalog(path, columns)
    assert list(frame["name"]) == ["Song A", "Song B"]
    assert list(frame["popularity"]) == [0.8, 0.2]  # Spotify's 0..100 -> 0..1
    assert list(frame["spotify_id"]) == ["4uLU6hMCjMI75M1A2tKUQC", ""]  # only 22-char base62 ids count
    assert list(frame["tempo"]) == [120.0, 90.0]


def test_missing_required_column_names_it_and_the_fix(tmp_path):
    path = write(tmp_path / "c.csv", "name,artist,energy\nA,B,0.5\n")
    with pytest.raises(CatalogError, match=r"c\.csv: required column 'valence'.*catalog_columns\.valence"):
        load_feature_catalog(path)
    with pytest.raises(CatalogError, match=r"catalog_columns\.genre='style' is not a column"):
        load_feature_catalog(write(tmp_path / "d.csv", HEADER + "1,A,B,5,0.5,0.5\n"), {"genre": "style"})
    with pytest.raises(CatalogError, match="unknown keys"):
        load_feature_catalog(path, {"valnce": "valence"})


def test_non_numeric_value_names_the_line(tmp_path):
    path = write(tmp_path / "c.csv", HEADER + "1,A,B,5,0.5,0.5\n2,C,D,5,high,0.5\n3,E,F,5,0.2,0.5\n")
    with pytest.raises(CatalogError, match=r"'valence'.*not numbers on line 3 \(e\.g\. 'high'\)"):
        load_feature_catalog(path)


def test_out_of_range_values_name_the_lines(tmp_path):
    path = write(tmp_path / "c.csv", HEADER + "1,A,B,5,0.5,1.5\n2,C,D,5,0.5,0.5\n3,E,F,5,0.5,-0.1\n")
    with pytest.raises(CatalogError, match=r"'energy'.*\[0, 1\]; lines 2, 4"):
        load_feature_catalog(path)
    path = write(tmp_path / "p.csv", HEADER + "1,A,B,150,0.5,0.5\n")
    with pytest.raises(CatalogError, match=r"'popularity'.*\[0, 100\]"):
        load_feature_catalog(path)
    path = write(tmp_path / "blank.csv", HEADER + "1,A,B,5,,0.5\n")
    with pytest.raises(CatalogError, match=r"'valence'.*empty on line 2"):
        load_feature_catalog(path)


def test_empty_or_missing_files(tmp_path):
    with pytest.raises(CatalogError, match="the file is empty"):
        load_feature_catalog(write(tmp_path / "empty.csv", ""))
    with pytest.raises(CatalogError, match="no rows under the header"):
        load_feature_catalog(write(tmp_path / "header.csv", HEADER))
    with pytest.raises(CatalogError, match=r"not found.*catalog_path"):
        load_feature_catalog(tmp_path / "nope.csv")


def test_playlist_folder_errors(tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    write(folder / "happy.csv", "Name,Album,Artist\nSong,Album,Band\n")
    write(folder / "joyful.csv", "Name,Album,Artist\nSong 2,Album,Band 2\n")
    with pytest.raises(CatalogError, match=r"joyful\.csv: 'joyful' is not an emotion.*angry, disgust"):
        load_playlists(folder)
    (folder / "joyful.csv").unlink()
    # the seed project's adjectives work as file names too
    write(folder / "surprised.csv", "Name,Album,Artist\nSong 3,Album,Band 3\n")
    assert set(load_playlists(folder)["emotion"]) == {"happy", "surprise"}
    write(folder / "surprise.csv", "Name,Album,Artist\nSong 4,Album,Band 4\n")
    with pytest.raises(CatalogError, match="a second playlist for 'surprise'"):
        load_playlists(folder)
    with pytest.raises(CatalogError, match="no playlist files"):
        load_playlists(tmp_path)


def test_playlist_file_errors(tmp_path):
    cases = {
        "Title,Album,Artist\nA,B,C\n": "required column 'Name' is missing",
        "Name,Album,Artist\nA,B,C\n,B,D\n": "Name or Artist is empty on line 3",
        "Name,Album,Artist,spotify_id\nA,B,C,bad-id\n": "'spotify_id', line 2: 'bad-id' is not a Spotify",
        "Name,Album,Artist,path\nA,B,C,missing.mp3\n": "line 2: audio file 'missing.mp3' not found",
        "Name,Album,Artist\nA,B,C\nA,X,C\n": r"listed twice \(line 3\)",
        "": "the file is empty",
    }
    for text, message in cases.items():
        with pytest.raises(CatalogError, match=message):
            load_playlist_file(write(tmp_path / "sad.csv", text), "sad")


def test_playlist_file_optional_columns(tmp_path):
    write(tmp_path / "song.wav", "not really audio; the path only has to exist")
    text = (
        ",Name,Album,Artist,spotify_url,path\n"
        "0,A,B,C,https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC?si=x,song.wav\n"
        "1,D,E,F,,\n"
    )
    frame = load_playlist_file(write(tmp_path / "sad.csv", text), "sad")
    assert list(frame["spotify_id"]) == ["4uLU6hMCjMI75M1A2tKUQC", ""]
    assert frame["path"][0] == str((tmp_path / "song.wav").resolve()) and frame["path"][1] == ""
    assert frame["id"][0] == "4uLU6hMCjMI75M1A2tKUQC" and frame["id"][1].startswith("t:")
    assert parse_spotify_track("spotify:track:4uLU6hMCjMI75M1A2tKUQC") == "4uLU6hMCjMI75M1A2tKUQC"


def test_recommender_from_config_paths(tmp_path):
    rows = "".join(f"{i},S{i},A{i},50,{i / 20},{i / 20}\n" for i in range(21))
    catalog = write(tmp_path / "c.csv", HEADER + rows)
    music = {"catalog_path": str(catalog), "k": 3, "strategy": "uplift", "recent_exclude": 2}
    rec = Recommender.from_config({"music": music})
    assert rec.mode == "catalog" and len(rec.recommend("sad")) == 3
    session = rec.session()
    session.played("a", "b", "c")
    assert session.recent == ("b", "c")
    rec = Recommender.from_config({"playlists_dir": DEFAULT_PLAYLISTS_DIR, "targets": {"sad": [0.1, 0.1]}})
    assert rec.mode == "playlists" and rec.target("sad") == (0.1, 0.1)
    with pytest.raises(ValueError, match=r"music\.targets\.sad"):
        Recommender.from_config({"targets": {"sad": [0.1, 2.0]}})
    with pytest.raises(CatalogError, match="not found"):
        Recommender.from_config({"catalog_path": str(tmp_path / "missing.csv")})


def test_real_moods_catalogue(shared_data):
    path = shared_data / "music" / "data_moods.csv.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    frame = load_feature_catalog(path)
    assert len(frame) == 686 and frame["spotify_id"].str.len().eq(22).all()
    assert frame["valence"].between(0, 1).all() and frame["popularity"].between(0, 1).all()
    rec = Recommender(frame)
    happy, sad = rec.recommend("happy", k=10), rec.recommend("sad", k=10)
    assert np.mean([t.valence for t in happy]) > np.mean([t.valence for t in sad]) + 0.4
    assert all(t.play.kind == "spotify" and t.play.embed_url.endswith(t.id) for t in happy)
    for emotion in EMOTIONS:
        uplift = rec.recommend(emotion, strategy="uplift", k=10)
        assert len({t.artist for t in uplift}) == 10
        assert [t.valence for t in uplift] == sorted(t.valence for t in uplift)


# ------------------------------------------------------------------------------------ the built-in catalogue


def test_builtin_catalogue_is_the_default_and_plays_real_tracks():
    """The default configuration loads the catalogue shipped in the package: real Spotify ids and features."""
    from emotune.config import compose

    frame = load_feature_catalog(BUILTIN_CATALOG)
    assert len(frame) == 686 and frame["spotify_id"].str.len().eq(22).all()
    for column in ("valence", "energy", "popularity", "tempo", "danceability"):
        assert frame[column].notna().all(), column
    assert frame["name"].ne("").all() and frame["artist"].ne("").all() and frame["album"].ne("").all()
    rec = Recommender.from_config(compose())
    assert rec.mode == "catalog" and len(rec.tracks) == 686
    sad, happy = rec.recommend("sad"), rec.recommend("happy")
    assert np.mean([t.valence for t in happy]) - np.mean([t.valence for t in sad]) >= 0.3
    for emotion in EMOTIONS:
        uplift = rec.recommend(emotion, strategy="uplift")
        valence = [t.valence for t in uplift]
        assert valence == sorted(valence) and valence[-1] - valence[0] > 0.1, (emotion, valence)
        assert all(t.play.kind == "spotify" for t in uplift)
    with gzip.open(BUILTIN_CATALOG, "rt", encoding="utf-8") as handle:
        assert handle.readline().strip() == ",".join(BUILTIN_COLUMNS)  # only the columns it uses


SOURCE_HEADER = (
    "name,album,artist,id,release_date,popularity,length,danceability,energy,valence,tempo,mood,genre\n"
)


def small_source(path: Path) -> Path:
    rows = [
        "Hurt,American IV,Johnny Cash,6ZZFfQ2nLq2YN4ufuv8ywk,2002,70,218,0.31,0.2,0.0806,94.2,Sad,N/A",
        "Lovely Day,M,Bill Withers,0ACACkoHUwgfgY5CxVIL4N,1977,67,254,0.692,0.651,0.706,97.937,Happy,soul",
        "Hurt (Remastered),Hits,Johnny Cash,0aaaaaaaaaaaaaaaaaaaaa,2010,10,218,0.3,0.2,0.08,94,Sad,country",
        "Quiet,Q,Nobody,1bbbbbbbbbbbbbbbbbbbbb,2020,5,100,0.1,0.05,0.1,60.5,Calm,ambient",
    ]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(SOURCE_HEADER + "\n".join(rows) + "\n")
    return path


def test_build_catalog_keeps_used_columns_and_is_reproducible(tmp_path):
    source = small_source(tmp_path / "data_moods.csv.gz")
    out = tmp_path / "a" / "tracks.csv.gz"
    frame = build_catalog(source, out)
    assert list(frame["name"]) == ["Hurt", "Lovely Day", "Quiet"]  # the less popular repeat is dropped
    with gzip.open(out, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert lines[0] == ",".join(BUILTIN_COLUMNS)
    assert (
        lines[1] == "6ZZFfQ2nLq2YN4ufuv8ywk,Hurt,Johnny Cash,American IV,,70,0.0806,0.2,0.31,94.2"
    )  # N/A -> ""
    again = build_catalog(source, tmp_path / "b" / "tracks.csv.gz")
    assert (tmp_path / "b" / "tracks.csv.gz").read_bytes() == out.read_bytes()  # same source, same bytes
    assert again.equals(frame)

    write(tmp_path / "bad.csv", "id,name,artist,valence,energy\nx,A,B,0.5,0.5\n")
    with pytest.raises(CatalogError, match="album, genre, popularity, danceability, tempo are missing"):
        build_catalog(tmp_path / "bad.csv", tmp_path / "c.csv.gz")
    assert not (tmp_path / "c.csv.gz").exists()


def test_annotate_playlists_gives_matching_songs_their_ids_and_features(tmp_path):
    catalog = build_catalog(small_source(tmp_path / "src.csv.gz"), tmp_path / "tracks.csv.gz")
    lists = tmp_path / "lists"
    lists.mkdir()
    write(lists / "sad.csv", "Name,Album,Artist\nHurt,American IV,Johnny Cash\nOther Song,X,Someone\n")
    other = "spotify:track:7ccccccccccccccccccccc"
    write(
        lists / "happy.csv", f"Name,Album,Artist,spotify_id\nLovely Day (Remastered),M,Bill Withers,{other}\n"
    )
    assert annotate_playlists(catalog, lists) == {"happy.csv": 0, "sad.csv": 1}
    lines = (lists / "sad.csv").read_text().splitlines()
    assert lines[0] == "Name,Album,Artist,spotify_id,valence,energy,tempo,popularity"
    assert lines[1] == "Hurt,American IV,Johnny Cash,6ZZFfQ2nLq2YN4ufuv8ywk,0.0806,0.2,94.2,70"
    assert lines[2] == "Other Song,X,Someone,,,,,"
    assert other in (lists / "happy.csv").read_text()  # a song with its own, different id keeps it
    sad = load_playlist_file(lists / "sad.csv", "sad")
    assert sad.loc[0, "popularity"] == 0.7 and sad.loc[0, "tempo"] == 94.2 and np.isnan(sad.loc[1, "valence"])
    assert annotate_playlists(catalog, lists) == {"happy.csv": 0, "sad.csv": 1}  # idempotent
    assert (lists / "sad.csv").read_text().splitlines() == lines


def test_playlist_feature_errors_name_the_line(tmp_path):
    path = write(tmp_path / "sad.csv", "Name,Album,Artist,valence\nA,B,C,0.5\nD,E,F,high\n")
    with pytest.raises(
        CatalogError, match=r"column 'valence' \(valence\) has values that are not numbers on line 3"
    ):
        load_playlist_file(path, "sad")
    write(path, "Name,Album,Artist,popularity\nA,B,C,250\n")
    with pytest.raises(CatalogError, match=r"'popularity'.*\[0, 100\]; line 2"):
        load_playlist_file(path, "sad")


def test_curated_songs_in_the_catalogue_carry_its_ids_and_features():
    catalog = load_feature_catalog(BUILTIN_CATALOG).set_index("spotify_id")
    lists = load_playlists()
    known = lists[lists["spotify_id"] != ""]
    assert len(known) == 19 and set(known["spotify_id"]) <= set(catalog.index)
    for song in known.itertuples():
        row = catalog.loc[song.spotify_id]
        assert (song.valence, song.energy, song.tempo) == (row.valence, row.energy, row.tempo)
        assert song.popularity == pytest.approx(row.popularity)
    # Every curated song that is a catalogue row (same artist and title) has been given its id.
    keys = set(song_keys(catalog.reset_index()))
    assert song_keys(lists).isin(keys).sum() == len(known)


def test_builtin_catalogue_rebuilds_from_the_development_data(shared_data, tmp_path):
    """`emotune music build-catalog` from the source file reproduces the shipped catalogue and playlists."""
    source = shared_data / "music" / "data_moods.csv.gz"
    if not source.is_file():
        pytest.skip(f"{source} not found")
    lists = tmp_path / "playlists"
    shutil.copytree(DEFAULT_PLAYLISTS_DIR, lists)
    for copy in lists.glob("*.csv"):  # the lists as curated, before the build gave songs their ids
        curated = pd.read_csv(copy, dtype=str, keep_default_na=False)
        curated[["spotify_id", *PLAYLIST_FEATURES]] = ""
        curated.to_csv(copy, index=False)
    out = tmp_path / "tracks.csv.gz"
    assert (
        main(
            ["music", "build-catalog", "--source", str(source), "--out", str(out), "--playlists", str(lists)]
        )
        == 0
    )
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(BUILTIN_CATALOG.read_bytes())
    for shipped in DEFAULT_PLAYLISTS_DIR.glob("*.csv"):
        assert (lists / shipped.name).read_text() == shipped.read_text(), shipped.name
