"""Draw docs/long_run.png, the long run's validation accuracy per epoch and attempt, from docs/long_run.csv.

Usage: python docs/plot_long_run.py   (needs matplotlib, which the full environment has)
"""

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent


def main() -> None:
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(HERE / "long_run.csv", newline="") as f:
        for row in csv.DictReader(f):
            curves[row["attempt"]].append((int(row["epoch"]), 100.0 * float(row["val_accuracy"])))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for attempt, points in curves.items():
        epochs, accuracy = zip(*sorted(points), strict=True)
        best = max(range(len(accuracy)), key=accuracy.__getitem__)
        label = f"{attempt}: best {accuracy[best]:.1f}% at epoch {epochs[best]}"
        ax.plot(epochs, accuracy, marker=".", markersize=3, linewidth=1, label=label)
    ax.set_xlim(0, 250)
    ax.set_xlabel("epoch (of 250)")
    ax.set_ylabel("validation accuracy, % (2,872 held-out Training faces)")
    ax.set_title("The long run (v5): validation accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / "long_run.png")
    print(f"wrote {HERE / 'long_run.png'}")


if __name__ == "__main__":
    main()
