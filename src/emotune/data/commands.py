"""`emotune data validate | synthesize | download`."""

from __future__ import annotations

import sys
from typing import Any

from emotune.labels import EMOTIONS


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    """A plain-text table: one row per split, one column per class, plus totals."""
    columns = [*EMOTIONS, "total"]
    width = max(len(c) for c in columns) + 1
    lines = [f"{'split':<11}" + "".join(f"{c:>{width}}" for c in columns)]
    for split, per_class in counts.items():
        lines.append(f"{split:<11}" + "".join(f"{per_class[c]:>{width}}" for c in columns))
    totals = {c: sum(per_class[c] for per_class in counts.values()) for c in columns}
    lines.append(f"{'all':<11}" + "".join(f"{totals[c]:>{width}}" for c in columns))
    return "\n".join(lines)


def _validate(args: Any) -> int:
    from emotune.data.fer2013 import SPLITS, DataValidationError, load
    from emotune.data.splits import SPLIT_NOTES

    try:
        data = load(args.path, progress=not args.quiet)
    except (DataValidationError, FileNotFoundError, ValueError) as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    counts = data.counts()
    print(f"{args.path}: {len(data.y)} faces ({data.format}), valid")
    print(format_counts(counts))
    missing = [s for s in SPLITS if s not in counts]
    if missing:
        note = f" ({SPLIT_NOTES['validation']})" if "test" in missing else ""
        print(f"missing splits: {', '.join(missing)}{note}")
    return 0


def _synthesize(args: Any) -> int:
    from emotune.data.synthetic import synthesize, synthesize_votes

    try:
        out = synthesize(args.out, rows=args.rows, seed=args.seed)
        votes = synthesize_votes(args.votes, rows=args.rows, seed=args.seed) if args.votes else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.rows} SYNTHETIC faces (seed {args.seed}) to {out}")
    if votes:
        print(f"wrote their SYNTHETIC FER+ votes to {votes}")
    return 0


def _download(args: Any) -> int:
    from emotune.data.download import DownloadError, download

    try:
        path = download(args.source, args.dest, timeout=args.timeout, force=args.force)
    except DownloadError as exc:
        print(f"download failed: {exc}", file=sys.stderr)
        return 1
    print(f"FER2013 is at {path}. Record it with: dvc add data && git add data.dvc")
    if path.is_dir():
        print(f"Then set data.raw_path: {path} in conf/data/fer2013.yaml and run `make params`.")
    return 0


def register(sub: Any) -> None:
    data = sub.add_parser("data", help="FER2013 data: validate, synthesize, download").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("validate", help="check a FER2013 CSV (.csv/.csv.gz) or image folder; print counts")
    p.add_argument(
        "path", help="Kaggle CSV (plain or .gz) or image-folder root (train/<class>/..., test/...)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_validate)

    p = data.add_parser("synthesize", help="write SYNTHETIC FER2013-format faces (tests and smoke runs)")
    p.add_argument(
        "--out", default="artifacts/synthetic/fer2013_synthetic.csv", help="must contain 'synthetic'"
    )
    p.add_argument("--rows", type=int, default=2100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--votes", default=None, help="also write FER+-format votes for these faces to this CSV")
    p.set_defaults(func=_synthesize)

    p = data.add_parser("download", help="fetch FER2013 from Kaggle (needs credentials and internet)")
    p.add_argument("--source", choices=["csv", "competition", "images"], default="csv")
    p.add_argument("--dest", default="data/fer2013", help="folder for fer2013.csv.gz or images/")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for kaggle.com")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=_download)
