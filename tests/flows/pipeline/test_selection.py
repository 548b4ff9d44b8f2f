"""The selection stage's plain functions (flows/pipeline/selection.py), without Prefect: the search
space file, the validation folds, one candidate on its folds, the compositions, the rule, the records
on disk, and the refit winner. Known answers throughout (hand-made results, sklearn's AUROC)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from ebm_core import (
    ComposedDetector,
    ContrastiveHeadDetector,
    EnergyDetector,
    KernelDensityDetector,
)
from flows.pipeline import selection
from flows.pipeline.selection import (
    CandidateResult,
    CandidateSpec,
    SearchSpace,
    SelectionOutcome,
    baseline_warning,
    choose,
    compositions,
    evaluate_candidate,
    load_folds,
    make_folds,
    refit_winner,
    save_folds,
)


# ---- data -------------------------------------------------------------------------------------------
def direction_blobs(n_classes: int, n_per_class: int, dim: int = 12, spread: float = 0.3, seed: int = 0):
    """Class k is a tight blob around 10 * e_k: every class has its own direction (the kernel density
    compares directions), so a held-out class is far from every training row."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = 10.0 * np.eye(dim)[:n_classes]
    return centres[y] + spread * rng.standard_normal((len(y), dim)), y


def result(name, family="label_free", auroc=(0.9,), fpr95=(0.3,), cost=1.0, error=None, **kw) -> CandidateResult:
    return CandidateResult(
        name=name, family=family, kind="kernel_density" if family == "label_free" else "energy",
        fold_auroc=tuple(auroc), fold_fpr95=tuple(fpr95), fit_seconds=0.1, score_us_per_row=1.0,
        score_cost=cost, error=error, **kw,
    )


def write_yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


KD = {"name": "kd", "kind": "kernel_density", "family": "label_free", "params": {"temperature": 0.1}}
TINY_CE = {
    "name": "ce",
    "kind": "energy",
    "family": "labelled",
    "params": {
        "hidden_dims": [8],
        "objective": {"name": "ce"},
        "train": {"n_steps": 20, "batch_size": 32, "learning_rate": 0.01},
    },
}


# ---- the search space file ----------------------------------------------------------------------------
def test_packaged_search_space_loads_and_every_candidate_builds_its_kind():
    space = SearchSpace.from_yaml()
    assert space.candidates, "the packaged search space has no candidates"
    assert "AUROC" in space.rule and space.tie_tolerance > 0
    assert "default" in space.budgets and space.step_scale("default") == 1.0
    expected_class = {
        "kernel_density": KernelDensityDetector,
        "energy": EnergyDetector,
        "contrastive_head": ContrastiveHeadDetector,
    }
    for spec in space.candidates:
        detector = spec.build()
        assert type(detector) is expected_class[spec.kind], spec.name
        if spec.kind == "kernel_density":
            assert detector.temperature == spec.params["temperature"], spec.name
            assert spec.fit_params(seed=3) == {}
        else:
            assert detector.config.train.n_steps == spec.params["train"]["n_steps"], spec.name
            assert spec.fit_params(seed=3)["seed"] == 3
    # Label-free data keeps only the label-free candidates.
    assert all(c.family == "label_free" for c in space.usable(has_labels=False))
    assert space.usable(has_labels=True) == space.candidates


def test_budget_scales_the_training_steps_of_trained_candidates():
    space = SearchSpace.from_yaml()
    for budget, scale in space.budgets.items():
        assert space.step_scale(budget) == float(scale)
    trained = [c for c in space.candidates if c.kind != "kernel_density"]
    assert trained
    for spec in trained:
        steps = spec.params["train"]["n_steps"]
        assert spec.build(step_scale=0.3).config.train.n_steps == max(1, round(steps * 0.3)), spec.name
        assert spec.build(step_scale=1e-9).config.train.n_steps == 1, spec.name  # never 0 steps


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["candidates"].append({**KD, "name": "odd", "kind": "random_forest"}), r"candidate 'odd': unknown kind 'random_forest'"),
        (lambda d: d["candidates"].append(dict(KD)), r"candidate names must be unique.*'kd'"),
        (lambda d: d.update(composition_weights=[0.5, 1.5]), r"composition weights must be in \(0, 1\), got 1.5"),
        (lambda d: d.update(composition_weights=[0.0]), r"composition weights must be in \(0, 1\), got 0.0"),
        (lambda d: d["candidates"].append({**KD, "name": "fam", "family": "semi"}), r"candidate 'fam': family"),
        (lambda d: d.update(validation={"held_out_fraction": 1.0}), r"held_out_fraction must be in \(0, 1\)"),
        (lambda d: d.update(validation={"n_foldz": 3}), r"n_foldz"),
        (lambda d: d["candidates"][0].update(parms={}), r"parms"),
        (lambda d: d.update(candidates=[]), r"no candidates"),
    ],
)
def test_bad_search_space_file_raises_value_error_naming_the_file(tmp_path, change, message):
    data = {"candidates": [dict(KD), dict(TINY_CE)], "budgets": {"default": 1.0}}
    change(data)
    path = write_yaml(tmp_path / "space.yaml", data)
    with pytest.raises(ValueError, match=message) as info:
        SearchSpace.from_yaml(path)
    assert str(path) in str(info.value)


def test_invalid_yaml_syntax_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("candidates: [ {name: kd\n")
    with pytest.raises(ValueError, match="not valid YAML") as info:
        SearchSpace.from_yaml(path)
    assert str(path) in str(info.value)


def test_unknown_budget_names_the_budget_and_the_defined_ones(tmp_path):
    path = write_yaml(tmp_path / "space.yaml", {"candidates": [KD], "budgets": {"default": 1.0, "fast": 0.3}})
    space = SearchSpace.from_yaml(path)
    assert space.step_scale("fast") == 0.3
    with pytest.raises(ValueError, match=r"unknown selection budget 'huge'.*default, fast"):
        space.step_scale("huge")


def test_unknown_top_level_key_in_search_space_is_rejected(tmp_path):
    path = write_yaml(tmp_path / "space.yaml", {"candidates": [KD], "tie_tolerence": 0.05})
    with pytest.raises(ValueError, match="tie_tolerence"):
        SearchSpace.from_yaml(path)


# ---- validation folds -----------------------------------------------------------------------------------
def test_held_out_class_folds_hold_out_different_classes_and_never_leak_them():
    x, y = direction_blobs(n_classes=10, n_per_class=20)
    space = SearchSpace.from_yaml()  # held_out_fraction 0.2 of 10 classes = 2 held out per split
    folds, groups = make_folds(x, y, "held_out_classes", space, seed=7)
    np.testing.assert_array_equal(groups, y)
    assert len(folds) == space.n_splits
    held_out_sets = []
    for fold in folds:
        held = set(fold.held_out)
        assert len(held) == 2
        held_out_sets.append(held)
        assert not fold.use_external_ood
        # The held-out classes are exactly the OOD rows, and appear in no fit or id row.
        np.testing.assert_array_equal(fold.ood_rows, np.flatnonzero(np.isin(y, list(held))))
        assert held.isdisjoint(y[fold.fit_rows]) and held.isdisjoint(y[fold.id_rows])
        # Fit and id rows are disjoint and, with the OOD rows, cover every row once.
        assert np.intersect1d(fold.fit_rows, fold.id_rows).size == 0
        together = np.concatenate([fold.fit_rows, fold.id_rows, fold.ood_rows])
        np.testing.assert_array_equal(np.sort(together), np.arange(len(y)))
        kept = len(y) - len(fold.ood_rows)
        assert len(fold.id_rows) == round(space.id_validation_fraction * kept)
    # Different folds hold out different classes (10 classes, 3 splits of 2: all disjoint).
    for i in range(len(held_out_sets)):
        for j in range(i + 1, len(held_out_sets)):
            assert held_out_sets[i].isdisjoint(held_out_sets[j])


def test_folds_are_a_function_of_the_seed():
    x, y = direction_blobs(n_classes=6, n_per_class=15)
    space = SearchSpace.from_yaml()
    a, _ = make_folds(x, y, "held_out_classes", space, seed=1)
    b, _ = make_folds(x, y, "held_out_classes", space, seed=1)
    c, _ = make_folds(x, y, "held_out_classes", space, seed=2)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.fit_rows, fb.fit_rows)
        np.testing.assert_array_equal(fa.id_rows, fb.id_rows)
        assert fa.held_out == fb.held_out
    assert any(
        fa.held_out != fc.held_out or not np.array_equal(fa.id_rows, fc.id_rows) for fa, fc in zip(a, c)
    )


def test_ood_val_scheme_is_one_fold_that_uses_the_external_ood_rows():
    x, y = direction_blobs(n_classes=2, n_per_class=25)  # 2 classes are enough with OOD examples
    space = SearchSpace.from_yaml()
    folds, groups = make_folds(x, y, "ood_val", space, seed=0)
    assert len(folds) == 1
    (fold,) = folds
    assert fold.use_external_ood and fold.ood_rows.size == 0
    assert len(fold.id_rows) == round(space.id_validation_fraction * len(y))
    assert np.intersect1d(fold.fit_rows, fold.id_rows).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([fold.fit_rows, fold.id_rows])), np.arange(len(y)))
    assert groups is y


def test_fewer_than_three_classes_asks_for_an_ood_validation_set():
    x, y = direction_blobs(n_classes=2, n_per_class=25)
    with pytest.raises(ValueError, match=r"at least 3 classes, got 2.*--ood-val-data"):
        make_folds(x, y, "held_out_classes", SearchSpace.from_yaml(), seed=0)


def test_held_out_classes_without_labels_and_unknown_scheme_raise():
    x, _ = direction_blobs(n_classes=4, n_per_class=10)
    with pytest.raises(ValueError, match="need labels"):
        make_folds(x, None, "held_out_classes", SearchSpace.from_yaml(), seed=0)
    with pytest.raises(ValueError, match="unknown validation scheme 'k_fold'"):
        make_folds(x, None, "k_fold", SearchSpace.from_yaml(), seed=0)


def test_held_out_clusters_work_without_labels_and_recover_well_separated_blobs():
    x, y_true = direction_blobs(n_classes=5, n_per_class=40)
    space = replace(SearchSpace.from_yaml(), n_clusters=5)
    folds, groups = make_folds(x, None, "held_out_clusters", space, seed=0)
    # The k-means pseudo-classes are the 5 blobs (up to renaming).
    assert len(np.unique(groups)) == 5
    pairs = set(zip(y_true.tolist(), np.asarray(groups).tolist()))
    assert len(pairs) == 5
    assert len(folds) == space.n_splits
    for fold in folds:
        held = set(fold.held_out)
        assert held and held.isdisjoint(groups[fold.fit_rows]) and held.isdisjoint(groups[fold.id_rows])
        np.testing.assert_array_equal(fold.ood_rows, np.flatnonzero(np.isin(groups, list(held))))


def test_validation_scheme_prefers_ood_examples_then_labels():
    assert selection.validation_scheme(has_labels=True, has_ood_val=True) == "ood_val+held_out_classes"
    assert selection.validation_scheme(has_labels=False, has_ood_val=True) == "ood_val"
    assert selection.validation_scheme(has_labels=True, has_ood_val=False) == "held_out_classes"
    assert selection.validation_scheme(has_labels=False, has_ood_val=False) == "held_out_clusters"


def test_ood_val_with_labels_averages_both_schemes_with_equal_weight():
    x, y = direction_blobs(n_classes=5, n_per_class=20)
    space = replace(SearchSpace.from_yaml(), n_splits_with_ood_val=2)
    folds, _ = selection.make_folds(x, y, "ood_val+held_out_classes", space, seed=0)
    assert [f.scheme for f in folds] == ["ood_val", "held_out_classes", "held_out_classes"]
    assert folds[0].use_external_ood and not folds[1].use_external_ood
    # one OOD-val fold at 0.9 and two held-out-class folds at 0.6 and 0.8: (0.9 + 0.7) / 2
    result = selection.CandidateResult(
        "c", "labelled", "energy", (0.9, 0.6, 0.8), (0.1, 0.5, 0.3), 0.0, 0.0, 1.0,
        fold_schemes=tuple(f.scheme for f in folds),
    )
    assert result.auroc == pytest.approx(0.8)
    assert result.fpr95 == pytest.approx(0.25)
    assert result.summary()["val_auroc_by_scheme"] == {"ood_val": 0.9, "held_out_classes": 0.7}


# ---- folds on disk ------------------------------------------------------------------------------------
def test_save_and_load_folds_round_trip_with_plain_arrays(tmp_path):
    x, y = direction_blobs(n_classes=4, n_per_class=10)
    ood_val = np.random.default_rng(1).normal(size=(7, x.shape[1]))
    folds, _ = make_folds(x, y, "held_out_classes", SearchSpace.from_yaml(), seed=0)
    path = save_folds(tmp_path / "folds.npz", x, y, ood_val, folds)
    assert path.exists()
    loaded = load_folds(path)
    np.testing.assert_array_equal(loaded["x"], x)
    np.testing.assert_array_equal(loaded["ood_val"], ood_val)
    # Labels come back as strings, one string per class: the same partition of the rows.
    assert loaded["y"].tolist() == [str(v) for v in y]
    assert len(loaded["folds"]) == len(folds)
    for a, b in zip(folds, loaded["folds"]):
        np.testing.assert_array_equal(a.fit_rows, b.fit_rows)
        np.testing.assert_array_equal(a.id_rows, b.id_rows)
        np.testing.assert_array_equal(a.ood_rows, b.ood_rows)
        assert a.use_external_ood == b.use_external_ood
    # Nothing pickled: every array loads with allow_pickle=False.
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            assert data[key].dtype != object, key


def test_folds_without_labels_or_ood_load_as_none(tmp_path):
    x, _ = direction_blobs(n_classes=2, n_per_class=10)
    folds, _ = make_folds(x, None, "ood_val", SearchSpace.from_yaml(), seed=0)
    loaded = load_folds(save_folds(tmp_path / "folds.npz", x, None, None, folds))
    assert loaded["y"] is None and loaded["ood_val"] is None
    assert loaded["folds"][0].use_external_ood is True


def test_save_folds_returns_the_file_it_wrote_even_without_npz_suffix(tmp_path):
    x, y = direction_blobs(n_classes=3, n_per_class=5)
    folds, _ = make_folds(x, y, "held_out_classes", SearchSpace.from_yaml(), seed=0)
    path = save_folds(tmp_path / "folds", x, y, None, folds)
    assert path.exists()
    load_folds(path)


# ---- one candidate on its folds -------------------------------------------------------------------------
def test_kernel_density_candidate_flags_far_held_out_classes(tmp_path):
    x, y = direction_blobs(n_classes=5, n_per_class=30)
    folds, _ = make_folds(x, y, "held_out_classes", SearchSpace.from_yaml(), seed=0)
    path = save_folds(tmp_path / "folds.npz", x, y, None, folds)
    spec = CandidateSpec("kd", "kernel_density", "label_free", {"temperature": 0.1}, score_cost=2.0, group="kd")
    res = evaluate_candidate(spec, path, seed=0)
    assert res.group == "kd"
    assert res.ok and res.error is None
    assert len(res.fold_auroc) == len(folds) == len(res.id_scores) == len(res.ood_scores)
    assert res.auroc > 0.99 and res.fpr95 < 0.05
    assert (res.name, res.family, res.kind, res.score_cost) == ("kd", "label_free", "kernel_density", 2.0)
    # The kept scores are the fold's detector on the fold's rows.
    for fold, s_id, s_ood in zip(folds, res.id_scores, res.ood_scores):
        direct = KernelDensityDetector(0.1).fit(x[fold.fit_rows])
        np.testing.assert_allclose(s_id, direct.score(x[fold.id_rows]), rtol=1e-12)
        np.testing.assert_allclose(s_ood, direct.score(x[fold.ood_rows]), rtol=1e-12)


def test_candidate_on_ood_val_fold_is_scored_against_the_external_ood_rows(tmp_path):
    x, y = direction_blobs(n_classes=3, n_per_class=20)
    far = direction_blobs(n_classes=6, n_per_class=10, seed=1)[0][-10:]  # the 6th direction: unseen
    folds, _ = make_folds(x, y, "ood_val", SearchSpace.from_yaml(), seed=0)
    path = save_folds(tmp_path / "folds.npz", x, y, far, folds)
    res = evaluate_candidate(CandidateSpec("kd", "kernel_density", "label_free", {"temperature": 0.1}), path)
    assert len(res.ood_scores) == 1 and len(res.ood_scores[0]) == 10
    assert res.fold_auroc == (1.0,)


def test_failing_candidate_is_a_result_with_its_error_not_an_exception(tmp_path):
    x, y = direction_blobs(n_classes=4, n_per_class=10)
    folds, _ = make_folds(x, y, "held_out_classes", SearchSpace.from_yaml(), seed=0)
    path = save_folds(tmp_path / "folds.npz", x, y, None, folds)
    bad = CandidateSpec("bad_kd", "kernel_density", "label_free", {"temperature": -1.0})
    res = evaluate_candidate(bad, path)
    assert not res.ok
    assert res.error.startswith("ValueError:") and "temperature" in res.error
    assert res.fold_auroc == () and res.name == "bad_kd"


def test_labelled_candidate_gets_the_fit_rows_labels(tmp_path):
    x, y = direction_blobs(n_classes=4, n_per_class=15, dim=6)
    folds, _ = make_folds(x, y, "held_out_classes", SearchSpace.from_yaml(), seed=0)
    path = save_folds(tmp_path / "folds.npz", x, y, None, folds)
    spec = CandidateSpec(**TINY_CE)
    res = evaluate_candidate(spec, path, step_scale=1.0, seed=0)
    assert res.ok, res.error
    assert len(res.fold_auroc) == len(folds)
    # Without labels the same candidate fails (cross-entropy needs them), as a result.
    path_unlabelled = save_folds(tmp_path / "unlabelled.npz", x, None, None, folds)
    failed = evaluate_candidate(spec, path_unlabelled)
    assert not failed.ok and failed.error


# ---- compositions -------------------------------------------------------------------------------------
def _scored(name, family, id_scores, ood_scores):
    fold_auroc = tuple(roc_auc_score(np.r_[np.zeros(len(i)), np.ones(len(o))], np.r_[i, o]) for i, o in zip(id_scores, ood_scores))
    return result(
        name, family, auroc=fold_auroc, fpr95=(0.5,) * len(fold_auroc),
        id_scores=tuple(tuple(map(float, s)) for s in id_scores),
        ood_scores=tuple(tuple(map(float, s)) for s in ood_scores),
    )


def _hand_composition_auroc(first_id, first_ood, second_id, second_ood, w):
    """Mean over folds of sklearn's AUROC of w/sd_1 * s_1 + (1 - w)/sd_2 * s_2, sd = mean over folds of
    the member's in-distribution standard deviation."""
    sd_1 = np.mean([np.std(s) for s in first_id])
    sd_2 = np.mean([np.std(s) for s in second_id])
    return np.mean(
        [
            roc_auc_score(
                np.r_[np.zeros(len(first_id[k])), np.ones(len(first_ood[k]))],
                np.r_[
                    w / sd_1 * np.asarray(first_id[k]) + (1 - w) / sd_2 * np.asarray(second_id[k]),
                    w / sd_1 * np.asarray(first_ood[k]) + (1 - w) / sd_2 * np.asarray(second_ood[k]),
                ],
            )
            for k in range(len(first_id))
        ]
    ), (w / sd_1, (1 - w) / sd_2)


def test_composition_auroc_is_that_of_the_standardised_weighted_sum():
    rng = np.random.default_rng(0)
    # Two folds. Member a (label-free, scale ~1) and b (labelled, scale ~100) are each imperfect,
    # in different rows, so their sum ranks differently from either.
    a_id = [rng.normal(0, 1, 30), rng.normal(0, 1.5, 25)]
    a_ood = [rng.normal(1.0, 1, 20), rng.normal(1.2, 1, 15)]
    b_id = [rng.normal(0, 100, 30), rng.normal(0, 80, 25)]
    b_ood = [rng.normal(120, 100, 20), rng.normal(90, 80, 15)]
    a = _scored("a", "label_free", a_id, a_ood)
    b = _scored("b", "labelled", b_id, b_ood)
    failed_b = result("failed_b", "labelled", auroc=(), fpr95=(), error="RuntimeError: diverged")
    weights = (0.25, 0.6)
    out = compositions([a, b, failed_b], weights)
    assert len(out) == len(weights)  # one pair (the failed candidate is no member), one per weight
    for w, comp in zip(weights, out):
        expected, member_weights = _hand_composition_auroc(a_id, a_ood, b_id, b_ood, w)
        assert comp.members == ("a", "b") and comp.kind == "composed" and comp.family == "labelled"
        np.testing.assert_allclose(comp.weights, member_weights, rtol=1e-12)
        assert comp.auroc == pytest.approx(expected, abs=1e-12)
        assert comp.auroc != pytest.approx(a.auroc) and comp.auroc != pytest.approx(b.auroc)
        assert comp.name == f"composition(a*{w:g} + b*{1 - w:g})"
        assert comp.score_cost == a.score_cost + b.score_cost
        assert comp.ok and not comp.id_scores  # a composition is not composed again


def test_compositions_pair_the_best_of_each_family_and_the_three_leaders():
    rng = np.random.default_rng(1)
    scores = {}
    made = []
    # AUROC order by construction (shift of the OOD scores): f1 > l1 > f2 > l2 > f3.
    for name, family, shift, scale in [
        ("f1", "label_free", 3.0, 1.0), ("l1", "labelled", 1.5, 10.0), ("f2", "label_free", 0.8, 0.1),
        ("l2", "labelled", 0.3, 5.0), ("f3", "label_free", 0.0, 1.0),
    ]:
        ids = [scale * rng.normal(0, 1, 100), scale * rng.normal(0, 1, 90)]
        oods = [scale * rng.normal(shift, 1, 60), scale * rng.normal(shift, 1, 50)]
        scores[name] = (ids, oods)
        made.append(_scored(name, family, ids, oods))
    aurocs = {r.name: r.auroc for r in made}
    assert sorted(aurocs, key=lambda n: -aurocs[n])[:3] == ["f1", "l1", "f2"]
    out = compositions(made, (0.5,))
    # The best label-free with the best labelled (f1, l1) first, then the other pairs of the three leaders.
    assert [c.members for c in out] == [("f1", "l1"), ("f1", "f2"), ("l1", "f2")]
    assert [c.family for c in out] == ["labelled", "label_free", "labelled"]
    for comp in out:
        (first_id, first_ood), (second_id, second_ood) = (scores[m] for m in comp.members)
        expected, member_weights = _hand_composition_auroc(first_id, first_ood, second_id, second_ood, 0.5)
        assert comp.auroc == pytest.approx(expected, abs=1e-12), comp.name
        np.testing.assert_allclose(comp.weights, member_weights, rtol=1e-12)
    # `top` limits the leaders: with top=2 only the cross-family pair (it is also the leaders' pair).
    assert [c.members for c in compositions(made, (0.5,), top=2)] == [("f1", "l1")]


def test_only_the_best_variant_of_a_group_is_composed():
    rng = np.random.default_rng(2)

    def made(name, family, group, mean_auroc):
        ids, oods = [rng.normal(0, 1, 30)], [rng.normal(1, 1, 20)]
        return replace(_scored(name, family, ids, oods), fold_auroc=(mean_auroc,), group=group)

    kd_best = made("kd_t0.05", "label_free", "kernel_density", 0.99)
    kd_other = made("kd_t0.1", "label_free", "kernel_density", 0.98)  # second best overall, but a variant
    ce = made("ce", "labelled", None, 0.90)
    dsm = made("dsm", "label_free", None, 0.85)
    jem = made("jem", "labelled", None, 0.80)
    out = compositions([kd_other, jem, ce, kd_best, dsm], (0.5,))
    assert [c.members for c in out] == [("kd_t0.05", "ce"), ("kd_t0.05", "dsm"), ("ce", "dsm")]


def test_no_composition_without_two_usable_candidates():
    a = _scored("a", "label_free", [np.arange(5.0)], [np.arange(5.0) + 2])
    assert compositions([a], (0.5,)) == []
    b_failed = result("b", "labelled", auroc=(), fpr95=(), error="ValueError: x")
    assert compositions([a, b_failed], (0.5,)) == []
    assert compositions([], (0.5,)) == []


# ---- the rule -----------------------------------------------------------------------------------------
def test_highest_auroc_wins():
    assert choose([result("a", auroc=(0.90,), fpr95=(0.1,)), result("b", auroc=(0.95,), fpr95=(0.4,))], 0.002).name == "b"
    # The mean over folds counts, not the best fold.
    folds = [result("a", auroc=(1.0, 0.80)), result("b", auroc=(0.92, 0.92))]
    assert choose(folds, 0.002).name == "b"


def test_within_tie_tolerance_lower_fpr95_wins_then_lower_cost():
    a = result("a", auroc=(0.950,), fpr95=(0.30,))
    b = result("b", auroc=(0.949,), fpr95=(0.20,))
    assert choose([a, b], tie_tolerance=0.002).name == "b"
    assert choose([a, b], tie_tolerance=0.0005).name == "a"  # outside the tolerance: AUROC decides
    cheap = result("cheap", auroc=(0.949,), fpr95=(0.20,), cost=0.5)
    assert choose([a, b, cheap], tie_tolerance=0.002).name == "cheap"


def test_fpr95s_within_their_tolerance_are_equal_and_the_cheaper_detector_wins():
    single = result("single", auroc=(0.9973,), fpr95=(0.00623,), cost=2.0)
    composition = result("composition", auroc=(0.9969,), fpr95=(0.00617,), cost=3.0)
    assert choose([single, composition], tie_tolerance=0.002, fpr_tie_tolerance=0.005).name == "single"
    assert choose([single, composition], tie_tolerance=0.002, fpr_tie_tolerance=0.0).name == "composition"
    better_fpr = result("better_fpr", auroc=(0.9969,), fpr95=(0.0001,), cost=3.0)  # 0.006 lower: beyond the tolerance
    assert choose([single, better_fpr], tie_tolerance=0.002, fpr_tie_tolerance=0.005).name == "better_fpr"


def test_failed_candidates_are_skipped_and_all_failed_raises_naming_the_errors():
    failed_high = result("failed_high", auroc=(0.99,), error="DivergenceError: loss exploded")
    no_folds = result("no_folds", auroc=(), fpr95=(), error="ValueError: bad")
    nan = result("nan", auroc=(float("nan"),))
    ok = result("ok", auroc=(0.7,))
    assert choose([failed_high, no_folds, nan, ok], 0.002).name == "ok"
    with pytest.raises(RuntimeError, match=r"failed_high: DivergenceError: loss exploded; no_folds: ValueError: bad"):
        choose([failed_high, no_folds], 0.002)
    with pytest.raises(RuntimeError, match="no candidates"):
        choose([], 0.002)


# ---- the record ---------------------------------------------------------------------------------------
def test_baseline_warning_only_when_a_baseline_beats_the_winner():
    winner = result("kd", auroc=(0.95,))
    worse = {"knn": {"val_auroc": 0.90, "val_fpr95": 0.3}, "maha": {"val_auroc": None, "val_fpr95": None}}
    assert baseline_warning(winner, worse) == (1, None)
    better = {**worse, "logistic_energy": {"val_auroc": 0.97, "val_fpr95": 0.1}, "msp": {"val_auroc": 0.96, "val_fpr95": 0.2}}
    rank, warning = baseline_warning(winner, better)
    assert rank == 3
    assert "logistic_energy (0.9700)" in warning and "msp (0.9600)" in warning and "knn" not in warning
    assert warning.index("logistic_energy") < warning.index("msp")  # best first
    assert "kd (0.9500 AUROC)" in warning


def test_selection_outcome_json_round_trip(tmp_path):
    outcome = SelectionOutcome(
        scheme="held_out_classes",
        rule="highest mean validation AUROC",
        winner="kd",
        candidates=(result("kd", auroc=(0.9, 0.8)).summary(), result("ce", "labelled", error="ValueError: x").summary()),
        n_folds=2,
        held_out=((1, 2), ("a",)),
        budget="fast",
        seconds=1.5,
        validation_baselines={"knn": {"val_auroc": 0.8, "val_fpr95": 0.4}},
        validation_rank=1,
        warning=None,
    )
    path = outcome.write_json(tmp_path / "selection.json")
    back = SelectionOutcome.read_json(path)
    assert back == outcome
    assert back.to_dict() == outcome.to_dict() == json.loads(path.read_text())
    assert back.candidates[0]["val_auroc"] == 0.85 and back.candidates[1]["error"] == "ValueError: x"


# ---- the refit winner -----------------------------------------------------------------------------------
def test_refit_composition_is_a_composed_detector_scoring_the_weighted_sum(tmp_path):
    x, y = direction_blobs(n_classes=3, n_per_class=20, dim=6)
    path = write_yaml(tmp_path / "space.yaml", {"candidates": [KD, TINY_CE]})
    space = SearchSpace.from_yaml(path)
    winner = result("composition(kd*0.3 + ce*0.7)", "labelled", members=("kd", "ce"), weights=(0.3 / 2.0, 0.7 / 5.0))
    detector = refit_winner(winner, space, x, y, step_scale=1.0, seed=0, feature_names=[f"f{i}" for i in range(6)])
    assert isinstance(detector, ComposedDetector)
    (w_kd, kd), (w_ce, ce) = detector.members
    assert (w_kd, w_ce) == pytest.approx((0.3 / 2.0, 0.7 / 5.0), rel=1e-15)
    assert isinstance(kd, KernelDensityDetector) and kd.temperature == 0.1
    assert isinstance(ce, EnergyDetector) and ce.config.train.n_steps == 20
    assert ce.feature_names_in_ == [f"f{i}" for i in range(6)]
    probe = np.vstack([x[:5], 10.0 * np.eye(6)[3:]])
    np.testing.assert_allclose(detector.score(probe), w_kd * kd.score(probe) + w_ce * ce.score(probe), rtol=1e-10)
    # The label-free member is the same detector fitted on all the rows (it draws nothing).
    np.testing.assert_array_equal(kd.score(probe), KernelDensityDetector(0.1).fit(x).score(probe))


def test_refit_single_winner_and_budget(tmp_path):
    x, y = direction_blobs(n_classes=3, n_per_class=20, dim=6)
    space = SearchSpace.from_yaml(write_yaml(tmp_path / "space.yaml", {"candidates": [KD, TINY_CE]}))
    ce = refit_winner(result("ce", "labelled"), space, x, y, step_scale=0.5, seed=0)
    assert isinstance(ce, EnergyDetector) and ce.config.train.n_steps == 10
    kd = refit_winner(result("kd"), space, x, y, step_scale=0.5, seed=0)
    assert isinstance(kd, KernelDensityDetector) and kd.n_features_in_ == 6


# ---- confirmed problems from feedback, cross-fitted ------------------------------------------------------
def test_known_problem_folds_validate_each_half_once_and_train_on_the_other():
    from flows.pipeline.selection import MIN_KNOWN_PROBLEMS, fold_outliers, known_problem_folds

    x, _ = direction_blobs(n_classes=3, n_per_class=20)
    folds = known_problem_folds(x, 25, SearchSpace.from_yaml(), seed=0)
    assert [f.scheme for f in folds] == ["known_problems", "known_problems"]
    halves = [set(f.known_problem_rows.tolist()) for f in folds]
    assert halves[0].isdisjoint(halves[1]) and halves[0] | halves[1] == set(range(25))
    for fold in folds:
        assert set(fold.fit_rows.tolist()).isdisjoint(fold.id_rows.tolist()) and not fold.use_external_ood
    problems = np.arange(25.0)[:, None] * np.ones((1, x.shape[1]))  # row i holds the value i
    user = np.full((3, x.shape[1]), -1.0)
    for fold, half in zip(folds, halves):
        trained = fold_outliers(fold, user, problems)[:, 0].tolist()
        assert trained[:3] == [-1.0, -1.0, -1.0] and set(trained[3:]) == set(range(25)) - half
    assert fold_outliers(folds[0], None, None) is None
    with pytest.raises(ValueError, match=f"at least {MIN_KNOWN_PROBLEMS}"):
        known_problem_folds(x, MIN_KNOWN_PROBLEMS - 1, SearchSpace.from_yaml(), seed=0)


def test_a_candidate_is_scored_on_the_known_problems_its_fold_did_not_train_against(tmp_path, monkeypatch):
    from flows.pipeline.selection import known_problem_folds

    x, y = direction_blobs(n_classes=3, n_per_class=20)
    problems = direction_blobs(n_classes=6, n_per_class=10, seed=1)[0][-24:]  # unseen directions
    folds = known_problem_folds(x, len(problems), SearchSpace.from_yaml(), seed=0)
    path = save_folds(tmp_path / "folds.npz", x, y, None, folds, known_problems=problems)
    loaded = load_folds(path)
    np.testing.assert_array_equal(loaded["known_problems"], problems)
    for a, b in zip(folds, loaded["folds"]):
        np.testing.assert_array_equal(a.known_problem_rows, b.known_problem_rows)

    fitted_against = []
    spec = CandidateSpec("margin", "energy", "labelled", {
        "hidden_dims": [8], "objective": {"name": "margin"}, "train": {"n_steps": 5, "batch_size": 16}})
    original_fit = EnergyDetector.fit

    def recording_fit(self, x_fit, y_fit=None, **kwargs):
        fitted_against.append(kwargs.get("outliers"))
        return original_fit(self, x_fit, y_fit, **kwargs)

    monkeypatch.setattr(EnergyDetector, "fit", recording_fit)
    res = evaluate_candidate(spec, path, seed=0)
    assert res.ok, res.error
    for fold, outliers, s_ood in zip(folds, fitted_against, res.ood_scores):
        validated = problems[fold.known_problem_rows]
        assert len(s_ood) == len(validated)  # scored on its half only
        trained = {tuple(r) for r in np.round(outliers, 9).tolist()}
        assert not trained & {tuple(r) for r in np.round(validated, 9).tolist()}  # never trained against it
        assert len(outliers) == len(problems) - len(validated)
