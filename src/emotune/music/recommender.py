"""From an emotion (or the recogniser's 7 probabilities) to an ordered playlist; each track says how to play.

Valence–energy targets (Russell's circumplex: valence = pleasant..unpleasant, arousal ~ Spotify `energy`):
negative-valence emotions differ mainly in arousal (anger highest, then fear, disgust, sadness lowest);
happiness is pleasant and lively, surprise highly aroused and, as FER's "surprise" faces mostly are,
mildly positive; neutral sits near the centre, a little calm. A probability vector gives the
probability-weighted mean of the targets, so a half-happy, half-sad face gets music in between.

Scoring (lower is better): distance to the target in valence–energy space, minus a mild popularity prior
(`popularity_weight` * (popularity - 0.5)), minus `local_bonus` for files that play in the page, plus
seeded uniform noise (standard deviation `jitter`) so a new seed varies the list while a given seed always
returns the same one. Picks are greedy, one slot at a time, skipping recently played ids and artists
already picked. Speed: a k-d tree over (valence, energy) is built once; each slot scores only its nearest
few dozen tracks, which is exact because nothing farther can score better (else it scans everything).

Strategies: `match` keeps every slot at the mood's target. `uplift` (the iso-principle of music therapy:
meet the listener's mood, then lead it) moves the slot targets in a straight line from the mood's target
to `uplift_goal` (pleasant, moderately energetic); the picks are then ordered by valence so the list
rises. Without a feature catalogue the playlist files stand in: each song sits at its list's target and
slots are apportioned to the lists by the probabilities (largest remainder), so mixed faces mix lists.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from emotune.calibration import probability_vector
from emotune.labels import EMOTIONS
from emotune.music.catalog import (
    BUILTIN,
    BUILTIN_CATALOG,
    CatalogError,
    artist_key,
    canonical_emotion,
    load_feature_catalog,
    load_playlists,
)

log = logging.getLogger(__name__)

STRATEGIES = ("match", "uplift")

# (valence, energy) in 0..1, the scale of Spotify's audio features. See the module docstring.
DEFAULT_TARGETS: dict[str, tuple[float, float]] = {
    "angry": (0.20, 0.90),
    "disgust": (0.25, 0.55),
    "fear": (0.15, 0.70),
    "happy": (0.85, 0.70),
    "sad": (0.15, 0.25),
    "surprise": (0.65, 0.85),
    "neutral": (0.55, 0.45),
}
DEFAULT_UPLIFT_GOAL = (0.80, 0.60)
_KERNEL_WIDTH = 0.10  # playlists mode: how sharply an uplift slot target picks the nearest list
_UNIFORM_HALF_WIDTH = 3**0.5  # uniform noise on [-sqrt(3), sqrt(3)] has unit standard deviation

Mood = str | Mapping[str, float] | Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Play:
    """How to play a track: `local` (a file the page can stream), `spotify` (known track id) or `search`."""

    kind: str
    url: str  # Spotify track page, or a Spotify search for artist + title; always set
    embed_url: str | None = None  # Spotify embed player, when the id is known
    path: str | None = None  # the local audio file, for kind == "local"

    @property
    def spotify_uri(self) -> str | None:
        """`spotify:track:<id>`, what Spotify's iFrame API loads, when the id is known."""
        return f"spotify:track:{self.embed_url.rsplit('/', 1)[1]}" if self.embed_url else None


@dataclass(frozen=True)
class Recommendation:
    id: str
    name: str
    artist: str
    album: str
    genre: str
    valence: float
    energy: float
    popularity: float | None  # 0..1
    source: str  # catalog | playlist | library
    emotion: str  # the list it came from (playlists mode), else ""
    target: tuple[float, float]  # the slot's (valence, energy) target that picked it
    distance: float  # from the track to that target
    play: Play

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ListeningSession:
    """The recently played track ids of one listener (bounded), to keep the next playlist fresh."""

    def __init__(self, size: int = 20) -> None:
        self._recent: deque[str] = deque(maxlen=max(int(size), 0))

    @property
    def recent(self) -> tuple[str, ...]:
        return tuple(self._recent)

    def played(self, *tracks: str | Recommendation) -> None:
        for track in tracks:
            self._recent.append(track.id if isinstance(track, Recommendation) else str(track))

    def recommend(self, recommender: Recommender, mood: Mood, **kwargs: Any) -> list[Recommendation]:
        """recommender.recommend(..., exclude=recent); the caller marks what was actually played."""
        return recommender.recommend(mood, exclude=self.recent, **kwargs)


def mood_vector(mood: Mood) -> np.ndarray:
    """An emotion label, {emotion: p} or 7 probabilities (EMOTIONS order) -> a normalised (7,) vector."""
    if isinstance(mood, str):
        vector = np.zeros(len(EMOTIONS))
        vector[EMOTIONS.index(canonical_emotion(mood))] = 1.0
        return vector
    if isinstance(mood, Mapping):
        vector = np.zeros(len(EMOTIONS))
        for name, p in mood.items():
            vector[EMOTIONS.index(canonical_emotion(name))] += float(p)
    else:
        vector = np.asarray(mood, dtype=float).ravel()
        if vector.shape != (len(EMOTIONS),):
            raise ValueError(
                f"expected {len(EMOTIONS)} probabilities ({', '.join(EMOTIONS)}), got {vector.size}"
            )
    return probability_vector(vector, "mood")


def _point(value: Any, what: str) -> tuple[float, float]:
    point = tuple(float(v) for v in value)
    if len(point) != 2 or not all(0.0 <= v <= 1.0 for v in point):
        raise ValueError(f"{what} must be [valence, energy] within 0..1, got {list(value)}")
    return point  # type: ignore[return-value]


def merge_targets(overrides: Mapping[str, Sequence[float]] | None) -> dict[str, tuple[float, float]]:
    """DEFAULT_TARGETS with music.targets overrides applied (validated)."""
    merged = dict(DEFAULT_TARGETS)
    for name, point in dict(overrides or {}).items():
        merged[canonical_emotion(name)] = _point(point, f"music.targets.{name}")
    return merged


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fast 64-bit mixing hash (Steele et al.'s SplitMix64), vectorised."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def play_for(name: str, artist: str, spotify_id: str, path: str) -> Play:
    if spotify_id:
        url, embed = (
            f"https://open.spotify.com/track/{spotify_id}",
            f"https://open.spotify.com/embed/track/{spotify_id}",
        )
    else:
        url, embed = "https://open.spotify.com/search/" + quote(f"{artist} {name}".strip(), safe=""), None
    if path:
        return Play("local", url, embed, path)
    return Play("spotify" if spotify_id else "search", url, embed)


def resolve_path(value: str | Path) -> Path:
    """Relative config paths: from the working directory, else from the repository root."""
    from emotune.config import REPO_ROOT

    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path if (REPO_ROOT / path).exists() else path


class Recommender:
    """An index over one table of tracks (TRACK_COLUMNS), built once; `recommend` never touches the disk."""

    def __init__(
        self,
        tracks: pd.DataFrame,
        *,
        mode: str = "catalog",
        targets: Mapping[str, Sequence[float]] | None = None,
        uplift_goal: Sequence[float] = DEFAULT_UPLIFT_GOAL,
        popularity_weight: float = 0.1,
        local_bonus: float = 0.05,
        jitter: float = 0.02,
        k: int = 10,
        max_k: int = 100,
        max_exclude: int = 500,
        strategy: str = "match",
        seed: int = 0,
        recent_exclude: int = 20,
        library: Mapping[str, list[str]] | None = None,
    ) -> None:
        if mode not in ("catalog", "playlists"):
            raise ValueError(f"mode must be 'catalog' or 'playlists', got {mode!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.targets = merged = merge_targets(targets)
        self._target_matrix = np.array([merged[e] for e in EMOTIONS])  # (7, 2)
        self.uplift_goal = _point(uplift_goal, "music.uplift_goal")
        self.mode, self.k, self.strategy, self.seed = mode, int(k), strategy, int(seed)
        self.max_k = int(max_k)  # the most tracks one request may ask for: its work grows with k
        if not 1 <= self.k <= self.max_k:
            raise ValueError(f"music.k={self.k}: expected 1..music.max_k ({self.max_k})")
        self.max_exclude = int(max_exclude)  # the most ids one request may exclude: each widens every search
        self.recent_exclude = int(recent_exclude)
        if not 0 <= self.recent_exclude <= self.max_exclude:
            raise ValueError(
                f"music.recent_exclude={self.recent_exclude}: "
                f"expected 0..music.max_exclude ({self.max_exclude})"
            )
        self.popularity_weight, self.local_bonus, self.jitter = popularity_weight, local_bonus, jitter
        self.library = dict(library or {})

        tracks = tracks.reset_index(drop=True).copy()
        if mode == "playlists":
            # Songs without features sit at their list's target; library files join the nearest list.
            no_list = tracks["emotion"] == ""
            if no_list.any():
                points = tracks.loc[no_list, ["valence", "energy"]].to_numpy()
                nearest = np.argmin(((points[:, None, :] - self._target_matrix[None]) ** 2).sum(-1), axis=1)
                tracks.loc[no_list, "emotion"] = [EMOTIONS[i] for i in nearest]
            points = np.array([merged[e] for e in tracks["emotion"]]).reshape(-1, 2)
            tracks["valence"], tracks["energy"] = points[:, 0], points[:, 1]
        if tracks.empty:
            raise CatalogError("no tracks to recommend from: check music.catalog_path / playlists_dir")
        self.tracks = tracks
        # Plain dicts: a DataFrame row lookup (.iloc) per pick took most of a recommendation's time.
        self._records: list[dict[str, Any]] = tracks.to_dict("records")
        self._valence = tracks["valence"].to_numpy(dtype=np.float64)
        popularity = tracks["popularity"].fillna(0.5).to_numpy(dtype=np.float64)
        is_local = (tracks["path"] != "").to_numpy()
        self._prior = -popularity_weight * (popularity - 0.5) - local_bonus * is_local
        # The lowest score offset any track can get: bounds what lies beyond a nearest-neighbour query.
        self._offset_min = float(self._prior.min()) - self.jitter * _UNIFORM_HALF_WIDTH
        # One artist per list: tracks without an artist count as their own artist.
        artists = tracks["artist"].map(artist_key)
        self._artist_code, _ = pd.factorize(artists.where(artists != "", "\0" + tracks["id"]))
        self._rows_of_id: dict[str, list[int]] = {}
        for row, track_id in enumerate(tracks["id"]):
            self._rows_of_id.setdefault(track_id, []).append(row)
        from scipy.spatial import cKDTree

        self._tree = cKDTree(np.column_stack([self._valence, tracks["energy"].to_numpy(dtype=np.float64)]))

    # -------------------------------------------------------------------------------- construction

    @classmethod
    def from_files(
        cls,
        *,
        playlists_dir: str | Path | None = None,
        catalog_path: str | Path | None = None,
        catalog_columns: Mapping[str, str] | None = None,
        library_dir: str | Path | None = None,
        **options: Any,
    ) -> Recommender:
        """Load the catalogue (or the playlist files when there is none) and the local library, once.

        `catalog_path="builtin"` is the catalogue shipped in the package (the default configuration's).
        """
        from emotune.music.catalog import track_table
        from emotune.music.library import place_library, read_sidecar, scan_library

        start = time.perf_counter()
        if catalog_path:
            path = BUILTIN_CATALOG if str(catalog_path) == BUILTIN else resolve_path(catalog_path)
            mode, pool = "catalog", load_feature_catalog(path, catalog_columns)
        else:
            mode = "playlists"
            pool = load_playlists(resolve_path(playlists_dir) if playlists_dir else None)
        placed: dict[str, list[str]] = {}
        if library_dir:
            directory = resolve_path(library_dir)
            targets = merge_targets(options.get("targets"))
            pool, extra, placed = place_library(
                scan_library(directory), pool, read_sidecar(directory), targets, root=directory
            )
            pool = track_table(pd.concat([pool, extra], ignore_index=True)) if len(extra) else pool
        recommender = cls(pool, mode=mode, library=placed, **options)
        log.info("music index: %d tracks (%s) in %.2fs", len(pool), mode, time.perf_counter() - start)
        return recommender

    @classmethod
    def from_config(cls, cfg: Any = None) -> Recommender:
        """From the composed config (its `music` section, or the section itself); None composes conf/."""
        if cfg is None:
            from emotune.config import compose

            cfg = compose()
        music = cfg.get("music", cfg)
        get = music.get
        return cls.from_files(
            playlists_dir=get("playlists_dir"),
            catalog_path=get("catalog_path"),
            catalog_columns=dict(get("catalog_columns") or {}),
            library_dir=get("library_dir"),
            targets=dict(get("targets") or {}),
            uplift_goal=tuple(get("uplift_goal") or DEFAULT_UPLIFT_GOAL),
            popularity_weight=float(get("popularity_weight", 0.1)),
            local_bonus=float(get("local_bonus", 0.05)),
            jitter=float(get("jitter", 0.02)),
            k=int(get("k", 10)),
            max_k=int(get("max_k", 100)),
            max_exclude=int(get("max_exclude", 500)),
            strategy=str(get("strategy", "match")),
            seed=int(get("seed", 0)),
            recent_exclude=int(get("recent_exclude", 20)),
        )

    # ------------------------------------------------------------------------------------- querying

    def session(self) -> ListeningSession:
        """A new listener's history, as long as music.recent_exclude."""
        return ListeningSession(self.recent_exclude)

    def target(self, mood: Mood) -> tuple[float, float]:
        """The probability-weighted (valence, energy) target of a mood."""
        valence, energy = mood_vector(mood) @ self._target_matrix
        return float(valence), float(energy)

    def _slot_targets(self, probs: np.ndarray, strategy: str, k: int) -> np.ndarray:
        """(k, 2) targets, one per playlist position."""
        start = probs @ self._target_matrix
        along = np.linspace(0.0, 1.0, k) if strategy == "uplift" and k > 1 else np.zeros(k)
        path = start + along[:, None] * (np.asarray(self.uplift_goal) - start)
        if self.mode == "catalog":
            return path
        # Playlists: each slot takes a whole list. Weights move from the face's probabilities towards
        # the lists nearest the path; cumulative largest-remainder apportionment keeps the mix honest.
        sq = ((path[:, None, :] - self._target_matrix[None]) ** 2).sum(-1)
        kernel = np.exp(-(sq - sq.min(axis=1, keepdims=True)) / (2 * _KERNEL_WIDTH**2))
        kernel /= kernel.sum(axis=1, keepdims=True)
        weights = (1 - along)[:, None] * probs + along[:, None] * kernel
        cumulative, counts, chosen = np.cumsum(weights, axis=0), np.zeros(len(EMOTIONS)), []
        for row in cumulative:
            emotion = int(np.argmax(row - counts))
            counts[emotion] += 1
            chosen.append(emotion)
        return self._target_matrix[chosen]

    def recommend(
        self,
        mood: Mood,
        strategy: str | None = None,
        k: int | None = None,
        exclude: Iterable[str] = (),
        seed: int | None = None,
    ) -> list[Recommendation]:
        """Up to k tracks for the mood (fewer only when exclusions and the one-per-artist rule run out)."""
        strategy = strategy or self.strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        k = self.k if k is None else int(k)
        if not 1 <= k <= self.max_k:
            raise ValueError(f"k must be between 1 and {self.max_k} (music.max_k), got {k}")
        exclude = list(exclude)
        if len(exclude) > self.max_exclude:
            raise ValueError(
                f"exclude lists at most {self.max_exclude} track ids (music.max_exclude), got {len(exclude)}"
            )
        probs = mood_vector(mood)
        slots = self._slot_targets(probs, strategy, k)
        seed = self.seed if seed is None else int(seed)

        excluded = [self._rows_of_id[i] for i in exclude if i in self._rows_of_id]
        blocked = (
            np.unique(np.concatenate(excluded)).astype(np.intp) if excluded else np.zeros(0, dtype=np.intp)
        )
        artist_used = np.zeros(self._artist_code.max() + 1, dtype=bool)
        picks: list[tuple[int, tuple[float, float], float]] = []
        for slot in slots:
            target = (float(slot[0]), float(slot[1]))
            best = self._best(target, k + len(blocked), blocked, artist_used, seed)
            if best is None:
                break
            artist_used[self._artist_code[best[0]]] = True
            picks.append((best[0], target, best[1]))
        if strategy == "uplift":
            picks.sort(key=lambda pick: self._valence[pick[0]])  # stable: the list climbs in valence
        return [self._recommendation(*pick) for pick in picks]

    def _best(
        self,
        target: tuple[float, float],
        reserve: int,
        blocked: np.ndarray,
        artist_used: np.ndarray,
        seed: int,
    ) -> tuple[int, float] | None:
        """The lowest-scoring allowed track for one slot: (row, distance), or None when none is left.

        Exact without scoring every track: the best of the nearest few gives a score s; a track farther
        than s - (lowest possible offset) cannot beat it, so only the ball of that radius is scored.
        """
        n = len(self._valence)
        size = min(n, max(2, reserve + 32))
        dist, rows = (np.atleast_1d(a) for a in self._tree.query(target, k=size))
        best = self._lowest(target, rows, dist, blocked, artist_used, seed)
        if size == n:
            return best
        if best is None:  # the neighbourhood is used up (exclusions, artists): score everything
            rows = np.arange(n)
        else:
            radius = best[2] - self._offset_min
            if radius <= dist[-1]:
                return best[:2]
            rows = np.asarray(self._tree.query_ball_point(target, radius), dtype=np.intp)
        dist = np.hypot(self._tree.data[rows, 0] - target[0], self._tree.data[rows, 1] - target[1])
        best = self._lowest(target, rows, dist, blocked, artist_used, seed)
        return None if best is None else best[:2]

    def _lowest(
        self,
        target: tuple[float, float],
        rows: np.ndarray,
        dist: np.ndarray,
        blocked: np.ndarray,
        artist_used: np.ndarray,
        seed: int,
    ) -> tuple[int, float, float] | None:
        """Among `rows`: the allowed one with the lowest score -> (row, distance, score)."""
        score = dist + self._prior[rows] + self._noise(rows, seed)
        allowed = ~(artist_used[self._artist_code[rows]] | np.isin(rows, blocked))
        score = np.where(allowed, score, np.inf)
        i = int(np.argmin(score))
        return (int(rows[i]), float(dist[i]), float(score[i])) if np.isfinite(score[i]) else None

    def _noise(self, rows: np.ndarray, seed: int) -> np.ndarray:
        """Seeded uniform jitter per track (a hash of seed and row): fixed per seed, whatever is scored."""
        with np.errstate(over="ignore"):
            x = rows.astype(np.uint64) + _splitmix64(np.array([seed % 2**64], dtype=np.uint64))[0]
            u = (_splitmix64(x) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return self.jitter * _UNIFORM_HALF_WIDTH * (2.0 * u - 1.0)

    def _recommendation(self, row: int, target: tuple[float, float], distance: float) -> Recommendation:
        t = self._records[row]
        popularity = None if pd.isna(t["popularity"]) else float(t["popularity"])
        return Recommendation(
            id=t["id"],
            name=t["name"],
            artist=t["artist"],
            album=t["album"],
            genre=t["genre"],
            valence=float(t["valence"]),
            energy=float(t["energy"]),
            popularity=popularity,
            source=t["source"],
            emotion=t["emotion"],
            target=target,
            distance=round(distance, 4),
            play=play_for(t["name"], t["artist"], t["spotify_id"], t["path"]),
        )

    def summary(self) -> dict[str, Any]:
        """What was loaded: for `emotune music validate` and the service's health page."""
        tracks = self.tracks
        summary: dict[str, Any] = {
            "mode": self.mode,
            "tracks": len(tracks),
            "by_source": tracks["source"].value_counts().to_dict(),
            "playable_locally": int((tracks["path"] != "").sum()),
            "with_spotify_id": int((tracks["spotify_id"] != "").sum()),
            "artists": int(self._artist_code.max() + 1),
        }
        if self.mode == "playlists":
            summary["per_emotion"] = {e: int((tracks["emotion"] == e).sum()) for e in EMOTIONS}
        if self.library:
            summary["library"] = {how: len(paths) for how, paths in self.library.items()}
        return summary
