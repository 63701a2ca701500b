"""Recommender: mood mapping, strategies, diversity, determinism, recent tracks, pruning, built-in lists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emotune.labels import EMOTIONS
from emotune.music import DEFAULT_TARGETS, ListeningSession, Recommender, load_playlists, mood_vector
from emotune.music.catalog import DEFAULT_PLAYLISTS_DIR, artist_key, text_key, track_table


def synthetic_catalog(n: int, seed: int = 0, artists: int | None = None) -> pd.DataFrame:
    """n tracks spread over the valence–energy square, in the normalised track table."""
    rng = np.random.default_rng(seed)
    artists = artists or max(n // 5, 1)
    frame = pd.DataFrame(
        {
            "id": [f"tr{i:06d}" for i in range(n)],
            "name": [f"Song {i}" for i in range(n)],
            "artist": [f"Artist {i % artists}" for i in range(n)],
            "valence": rng.random(n).round(3),
            "energy": rng.random(n).round(3),
            "popularity": rng.integers(0, 101, n) / 100,
            "source": "catalog",
        }
    )
    return track_table(frame)


@pytest.fixture(scope="module")
def catalog_rec() -> Recommender:
    return Recommender(synthetic_catalog(3000), mode="catalog")


@pytest.fixture(scope="module")
def playlist_rec() -> Recommender:
    return Recommender.from_files()  # the built-in lists


@pytest.fixture(scope="module", params=["catalog", "playlists"])
def rec(request, catalog_rec, playlist_rec) -> Recommender:
    return catalog_rec if request.param == "catalog" else playlist_rec


def mean_valence(tracks) -> float:
    return float(np.mean([t.valence for t in tracks]))


# ------------------------------------------------------------------------------------------ mapping


def test_targets_follow_the_circumplex(catalog_rec):
    valence = {e: catalog_rec.target(e)[0] for e in EMOTIONS}
    energy = {e: catalog_rec.target(e)[1] for e in EMOTIONS}
    assert valence["happy"] > valence["neutral"] > valence["sad"]
    assert min(valence["happy"], valence["surprise"]) > max(
        valence[e] for e in ("angry", "disgust", "fear", "sad")
    )
    assert energy["angry"] > energy["fear"] > energy["disgust"] > energy["sad"]
    assert len(set(DEFAULT_TARGETS.values())) == len(EMOTIONS)


@pytest.mark.parametrize(("a", "b"), [("happy", "sad"), ("angry", "neutral"), ("fear", "surprise")])
def test_mixed_probabilities_target_lies_between(catalog_rec, a, b):
    pa, pb = np.array(catalog_rec.target(a)), np.array(catalog_rec.target(b))
    for w in (0.25, 0.5, 0.75):
        mixed = np.array(catalog_rec.target({a: w, b: 1 - w}))
        np.testing.assert_allclose(mixed, w * pa + (1 - w) * pb, atol=1e-12)
        lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
        assert np.all(mixed >= lo) and np.all(mixed <= hi) and not np.allclose(mixed, pa)


def test_mood_vector_forms_and_errors():
    one_hot = mood_vector("disgusted")
    assert one_hot[EMOTIONS.index("disgust")] == 1.0 and one_hot.sum() == 1.0
    np.testing.assert_allclose(mood_vector({"happy": 2, "sad": 2}), mood_vector([0, 0, 0, 1, 1, 0, 0]))
    np.testing.assert_allclose(mood_vector(np.full(7, 3.0)), np.full(7, 1 / 7))
    for bad in (
        "glad",
        [0.5, 0.5],
        [0, 0, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, -0.1],
        [np.nan, 0, 0, 1, 0, 0, 0],
    ):
        with pytest.raises(ValueError):
            mood_vector(bad)
    with pytest.raises(ValueError, match="unknown emotion"):
        mood_vector({"joy": 1.0})


# ----------------------------------------------------------------------------------------- strategies


def test_match_picks_tracks_near_the_target(catalog_rec):
    for emotion in EMOTIONS:
        tracks = catalog_rec.recommend(emotion, strategy="match", k=10)
        target = np.array(catalog_rec.target(emotion))
        assert len(tracks) == 10
        assert max(t.distance for t in tracks) < 0.12  # 3000 tracks: plenty within reach of every target
        assert all(
            np.isclose(np.hypot(t.valence - target[0], t.energy - target[1]), t.distance, atol=1e-4)
            for t in tracks
        )
    assert mean_valence(catalog_rec.recommend("happy")) > mean_valence(catalog_rec.recommend("sad")) + 0.5


@pytest.mark.parametrize("emotion", ["sad", "angry", "fear", "disgust"])
def test_uplift_starts_at_the_mood_and_rises(rec, emotion):
    tracks = rec.recommend(emotion, strategy="uplift", k=10)
    valence = [t.valence for t in tracks]
    assert len(tracks) == 10
    assert valence == sorted(valence) and valence[-1] - valence[0] > 0.4
    assert abs(valence[0] - rec.target(emotion)[0]) < 0.1  # it meets the listener where they are
    assert valence[-1] >= rec.uplift_goal[0] - 0.1


def test_no_artist_twice(rec):
    for emotion in EMOTIONS:
        for strategy in ("match", "uplift"):
            tracks = rec.recommend(emotion, strategy=strategy, k=20)
            keys = [artist_key(t.artist) for t in tracks]
            assert len(keys) == 20 and len(set(keys)) == 20


def test_one_artist_many_tracks_gives_one_pick():
    frame = synthetic_catalog(200, artists=3)
    tracks = Recommender(frame).recommend("happy", k=10)
    assert len(tracks) == 3  # fewer than k rather than repeating an artist


def test_same_seed_same_list_other_seeds_vary(rec):
    ids = lambda seed: [t.id for t in rec.recommend({"sad": 0.7, "neutral": 0.3}, k=10, seed=seed)]  # noqa: E731
    assert ids(3) == ids(3)
    assert len({tuple(ids(seed)) for seed in range(5)}) > 1


def test_recently_played_tracks_are_excluded(rec):
    session = ListeningSession(size=20)
    first = session.recommend(rec, "happy", k=10)
    session.played(*first)
    second = session.recommend(rec, "happy", k=10)
    assert len(second) == 10 and not {t.id for t in first} & {t.id for t in second}
    session.played(*second)
    session.played("x1", "x2")
    assert len(session.recent) == 20 and session.recent[-1] == "x2" and first[0].id not in session.recent


def test_popularity_is_a_mild_prior():
    frame = synthetic_catalog(4, artists=4)
    frame[["valence", "energy"]] = [[0.85, 0.70], [0.85, 0.70], [0.75, 0.70], [0.2, 0.2]]
    frame["popularity"] = [0.1, 0.9, 1.0, 1.0]
    rec = Recommender(frame, jitter=0.0)
    order = [t.id for t in rec.recommend("happy", k=4)]
    # at equal distance the popular one comes first, but 0.1 closer outweighs the whole popularity range
    assert order == ["tr000001", "tr000000", "tr000002", "tr000003"]


def test_mixed_faces_mix_the_playlists(playlist_rec):
    tracks = playlist_rec.recommend({"happy": 0.6, "sad": 0.3, "neutral": 0.1}, k=10)
    counts = pd.Series([t.emotion for t in tracks]).value_counts().to_dict()
    assert counts == {"happy": 6, "sad": 3, "neutral": 1}
    for t in tracks:  # a Spotify player for curated songs that are catalogue rows, else a search link
        prefix = "https://open.spotify.com/" + ("track/" if t.play.kind == "spotify" else "search/")
        assert t.play.kind in ("spotify", "search") and t.play.url.startswith(prefix)


def test_bad_arguments(playlist_rec):
    with pytest.raises(ValueError, match="strategy"):
        playlist_rec.recommend("sad", strategy="cheer")
    with pytest.raises(ValueError, match="k must be"):
        playlist_rec.recommend("sad", k=0)
    # One request's work grows with k: a huge k is refused at once, not computed until memory runs out.
    with pytest.raises(ValueError, match=r"between 1 and 100 \(music.max_k\), got 1000000000"):
        playlist_rec.recommend("sad", k=1_000_000_000)
    assert len(playlist_rec.recommend("sad", k=100)) <= 100
    with pytest.raises(ValueError, match=r"music\.k=5: expected 1\.\.music\.max_k"):
        Recommender(playlist_rec.tracks, k=5, max_k=3)
    # Each excluded id widens every slot's search: their number is bounded too.
    with pytest.raises(ValueError, match=r"at most 500 track ids \(music.max_exclude\), got 501"):
        playlist_rec.recommend("sad", exclude=[f"id{i}" for i in range(501)])
    with pytest.raises(ValueError, match="overflows"):
        playlist_rec.recommend([1e308] * 7)


class CountingRecommender(Recommender):
    """Counts the tracks scored: the work a request does, whatever the machine's speed."""

    scored = 0

    def _lowest(self, target, rows, *args):
        self.scored += len(rows)
        return super()._lowest(target, rows, *args)


def test_a_100k_catalogue_scores_only_the_tracks_near_each_position():
    n, k = 100_000, 10
    rec = CountingRecommender(synthetic_catalog(n, artists=20_000))
    recent = [f"tr{i:06d}" for i in range(20)]
    for strategy in ("match", "uplift"):
        for seed in range(5):
            rec.scored = 0
            tracks = rec.recommend({"sad": 0.5, "fear": 0.5}, strategy=strategy, seed=seed, exclude=recent)
            assert len(tracks) == k
            # A full scan scores all n tracks per position; the k-d tree's ball a few hundred of them
            # (test_pruned_search_equals_a_full_scan: with the same result).
            assert 0 < rec.scored <= k * n // 50, (strategy, seed, rec.scored)


def test_pruned_search_equals_a_full_scan(catalog_rec):
    """The k-d tree shortcut must give exactly what scoring every track gives."""
    from emotune.music.recommender import mood_vector as mv

    rec, exclude = catalog_rec, [f"tr{i:06d}" for i in range(0, 3000, 11)]
    for mood in ("angry", [0.2, 0, 0.1, 0.3, 0.4, 0, 0]):
        for strategy in ("match", "uplift"):
            slots = rec._slot_targets(mv(mood), strategy, 10)
            rows = np.arange(len(rec.tracks))
            score = rec._prior + rec._noise(rows, 7)
            score[np.isin(rec.tracks["id"], exclude)] = np.inf
            used, expected = set(), []
            for v, e in slots:
                s = np.hypot(rec.tracks["valence"] - v, rec.tracks["energy"] - e).to_numpy() + score
                s[np.isin(rec._artist_code, list(used))] = np.inf
                best = int(np.argmin(s))
                used.add(rec._artist_code[best])
                expected.append(best)
            if strategy == "uplift":
                expected.sort(key=lambda r: rec.tracks["valence"][r])
            got = [t.id for t in rec.recommend(mood, strategy=strategy, seed=7, exclude=exclude)]
            assert got == [rec.tracks["id"][r] for r in expected]


# ------------------------------------------------------------------------------------ default playlists


def test_default_playlists_are_seven_distinct_lists():
    frame = load_playlists(DEFAULT_PLAYLISTS_DIR)
    assert sorted(p.stem for p in DEFAULT_PLAYLISTS_DIR.glob("*.csv")) == sorted(EMOTIONS)
    counts = frame["emotion"].value_counts()
    assert set(counts.index) == set(EMOTIONS) and counts.min() >= 20
    songs = frame["artist"].map(artist_key) + " / " + frame["name"].map(text_key)
    assert not songs.duplicated().any(), songs[songs.duplicated()].tolist()  # no song in two lists
    for emotion, group in frame.groupby("emotion"):
        assert group["artist"].map(artist_key).is_unique, emotion  # a full top-k from one list


def test_default_playlists_differ_from_the_seed_project(shared_data):
    seed_dir = shared_data / "music" / "seed_playlists"
    if not seed_dir.is_dir():
        pytest.skip("seed playlists not in ../shared")
    song = lambda frame: set(frame["artist"].map(artist_key) + " / " + frame["name"].map(text_key))  # noqa: E731
    seed = set().union(*(song(pd.read_csv(f).rename(columns=str.lower)) for f in seed_dir.glob("*.csv")))
    assert len(seed) > 300
    assert not song(load_playlists()) & seed
