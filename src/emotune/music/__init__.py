"""Music for a mood: catalogues, a local library and a recommender from a face's emotion to a playlist.

Python API (what the service's /recommend and the page use)::

    from emotune.config import load_params
    from emotune.music import ListeningSession, Recommender

    recommender = Recommender.from_config(load_params().music)  # loads and validates everything ONCE
    session = recommender.session()   # one per listener: its recently played ids (music.recent_exclude)

    tracks = recommender.recommend(
        "sad",                     # or {"happy": 0.7, "sad": 0.3, ...} or 7 probabilities (EMOTIONS order)
        strategy="uplift",         # "match" mirrors the mood; "uplift" starts there and climbs to positive
        k=10,
        exclude=session.recent,    # never repeat what this listener just heard
        seed=0,                    # same seed, same list
    )
    for t in tracks:               # Recommendation: id, name, artist, album, genre, valence, energy, ...
        t.play.kind                # "local" (t.play.path: a file the page streams), "spotify" (t.play.url,
                                   # t.play.embed_url) or "search" (t.play.url: a Spotify search)
        t.to_dict()                # JSON-ready
    session.played(tracks[0])      # mark what was actually played

    recommender.target("fear")     # the (valence, energy) a mood maps to
    recommender.summary()          # what was loaded (mode, counts, library placement)

`recommend` only reads the index (safe to share one Recommender across threads/requests); it raises
ValueError for a bad mood/strategy/k and returns fewer than k tracks only when exclusions and the
one-track-per-artist rule exhaust the pool.

Sources (conf/music/): `catalog_path` (a CSV with valence/energy; columns mapped by `catalog_columns`) ->
"catalog" mode; without one, the per-emotion playlist files (`playlists_dir`, null = the built-in lists) ->
"playlists" mode. `library_dir` adds the user's own audio files (playable in the page). Errors in any file
raise `CatalogError` with the file, line and column. Details: recommender.py, catalog.py, library.py.
"""

from emotune.music.catalog import CatalogError, load_feature_catalog, load_playlists
from emotune.music.recommender import (
    DEFAULT_TARGETS,
    STRATEGIES,
    ListeningSession,
    Play,
    Recommendation,
    Recommender,
    mood_vector,
)

__all__ = [
    "DEFAULT_TARGETS",
    "STRATEGIES",
    "CatalogError",
    "ListeningSession",
    "Play",
    "Recommendation",
    "Recommender",
    "load_feature_catalog",
    "load_playlists",
    "mood_vector",
]
