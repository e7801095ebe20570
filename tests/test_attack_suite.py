"""The end-to-end attack runner `run_attacks` on a real overfitted target (the embedded digits data):
attack selection, shadow-free and shadow-calibrated rows, the gap and LiRA numbers re-derived
independently, offline pools, flip queries, report round trips and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from tfmi.attacks.lira import LiRA
from tfmi.attacks.shadow import train_shadows
from tfmi.attacks.signals import compute_signals
from tfmi.attacks.suite import (
    ATTACK_NAMES,
    LEARNED_ATTACK_NAMES,
    THRESHOLD_ATTACK_NAMES,
    AttackReport,
    flip_horizontally,
    parse_attacks,
    run_attacks,
    shadow_pool,
)
from tfmi.data import load_dataset, membership_split
from tfmi.data.dataset import make_dataset
from tfmi.errors import TfmiError
from tfmi.training import TrainConfig, train_target

ORACLE_ATTACKS = tuple(a for a in THRESHOLD_ATTACK_NAMES if a != "gap")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def split(digits):
    return membership_split(digits.y, target_size=300, seed=0)


@pytest.fixture(scope="module")
def target(digits, split):
    return train_target(digits, split, TrainConfig("mlp", epochs=30), verbose=0)


@pytest.fixture(scope="module")
def shadows(digits, split):
    return train_shadows(digits, shadow_pool(split, "online"), TrainConfig("mlp", epochs=30),
                         num_shadows=8, seed=1)


@pytest.fixture(scope="module")
def full_report(digits, split, target, shadows):
    return run_attacks(target.model, digits, split.members, split.non_members, shadows=shadows,
                       population=split.shadow_pool)


def numpy_accuracies(model, data, members, non_members):
    """Train (members) and test (non-members) accuracy from Keras predict, without tfmi."""
    def acc(idx):
        return float(np.mean(np.argmax(model.predict(data.x[idx], verbose=0), axis=1) == data.y[idx]))
    return acc(members), acc(non_members)


def row(report, attack, source):
    """The row of ``report`` whose name starts with ``attack`` (LiRA/learned rows carry suffixes)."""
    found = [r for r in report.results if r.attack.startswith(attack) and r.threshold_source == source]
    assert len(found) == 1, [(r.attack, r.threshold_source) for r in report.results]
    return found[0]


# --- attack selection ------------------------------------------------------------------------------

def test_parse_attacks_groups_lists_duplicates_and_order():
    assert parse_attacks("all") == ATTACK_NAMES
    assert parse_attacks(None) == ATTACK_NAMES
    assert parse_attacks("threshold") == THRESHOLD_ATTACK_NAMES
    assert parse_attacks("learned") == LEARNED_ATTACK_NAMES
    assert parse_attacks("lira") == ("lira_online", "lira_offline")
    # comma lists with spaces, reordered canonically, duplicates (also via groups) dropped
    assert parse_attacks(" lira_offline , loss,gap ") == ("gap", "loss", "lira_offline")
    assert parse_attacks(["top3", "loss", "loss", "learned"]) == ("loss", "shokri", "top3")
    assert parse_attacks("lira,lira_online,all") == ATTACK_NAMES
    with pytest.raises(TfmiError, match="unknown attack 'lsos'"):
        parse_attacks("loss,lsos")
    for empty in ("", " , ", []):
        with pytest.raises(TfmiError, match="no attack given"):
            parse_attacks(empty)


# --- without shadows -------------------------------------------------------------------------------

def test_without_shadows_only_gap_and_oracle_rows(digits, split, target):
    report = run_attacks(target.model, digits, split.members, split.non_members)
    rows = [(r.attack, r.threshold_source) for r in report.results]
    assert rows == [("gap", "none")] + [(a, "oracle") for a in ORACLE_ATTACKS]
    assert report.num_shadows == 0 and report.shadow_train_accuracy is None
    assert len(report.notes) == 1
    note = report.notes[0]
    assert "skipped" in note and "shadow" in note
    assert all(name in note for name in ("shokri", "top3", "lira_online", "lira_offline"))
    # "all" is the default, not an explicit request: same rows, still a note
    assert [r.attack for r in run_attacks(target.model, digits, split.members, split.non_members,
                                          attacks="all").results] == [r for r, _ in rows]
    # without the oracle only the threshold-free gap attack is left
    no_oracle = run_attacks(target.model, digits, split.members, split.non_members, oracle=False)
    assert [(r.attack, r.threshold_source) for r in no_oracle.results] == [("gap", "none")]
    for explicit in ("lira_online", ["loss", "shokri"], "learned"):
        with pytest.raises(TfmiError, match="need shadow models"):
            run_attacks(target.model, digits, split.members, split.non_members, attacks=explicit)


def test_gap_attack_is_half_plus_half_the_generalization_gap(digits, split, target):
    train_acc, test_acc = numpy_accuracies(target.model, digits, split.members, split.non_members)
    assert train_acc - test_acc > 0.03  # the digits MLP overfits (measured: 1.000 vs 0.933)
    report = run_attacks(target.model, digits, split.members, split.non_members, attacks="gap")
    assert report.train_accuracy == pytest.approx(train_acc, abs=1e-12)
    assert report.test_accuracy == pytest.approx(test_acc, abs=1e-12)
    assert report.generalization_gap == pytest.approx(train_acc - test_acc, abs=1e-12)
    gap = report.result("gap")
    assert gap.threshold_source == "none"
    assert gap.accuracy == pytest.approx(0.5 + (train_acc - test_acc) / 2, abs=1e-12)
    assert gap.num_members == len(split.members) and gap.num_non_members == len(split.non_members)


# --- with shadows ----------------------------------------------------------------------------------

def test_with_shadows_every_attack_produces_a_row(full_report, shadows, target):
    report = full_report
    assert [note.split(": a=")[0] for note in report.notes] == ["RMIA offline"]  # the tuned a
    assert report.num_shadows == 8
    assert report.shadow_train_accuracy == pytest.approx(float(np.mean(shadows.train_accuracy)))
    assert report.shadow_train_accuracy > report.shadow_test_accuracy  # the shadows overfit too
    assert report.output_kind in ("logits", "probabilities")
    assert row(report, "gap", "none")
    for name in ORACLE_ATTACKS:
        shadow_row, oracle_row = row(report, name, "shadow"), row(report, name, "oracle")
        # same scores: identical ROC; the oracle threshold maximizes balanced accuracy on them
        assert shadow_row.auc == pytest.approx(oracle_row.auc)
        assert oracle_row.accuracy >= shadow_row.accuracy - 1e-12
        assert shadow_row.accuracy > 0.55  # the shadow-calibrated threshold transfers
    for name in LEARNED_ATTACK_NAMES:
        assert row(report, name, "shadow").auc > 0.5
    online, offline = row(report, "LiRA online", "none"), row(report, "LiRA offline", "none")
    assert "fixed variance" in online.attack  # 8 shadows < 64: one global variance
    # measured: LiRA online AUC 0.71, TPR@1% 0.107 vs loss (shadow) 0.013
    assert online.auc > 0.6 and offline.auc > 0.55
    assert online.tpr_at_fpr[0.01] >= row(report, "loss", "shadow").tpr_at_fpr[0.01]
    assert online.tpr_at_fpr[0.01] > 0.03
    rmia = [r for r in report.results if r.attack.startswith("RMIA")]
    assert len(rmia) == 2 and all(r.threshold_source == "none" and r.auc > 0.55 for r in rmia)
    assert len(report.results) == 1 + 2 * len(ORACLE_ATTACKS) + len(LEARNED_ATTACK_NAMES) + 2 + 2


def test_record_scores_reproduce_every_realistic_row(full_report):
    """Per-record scores (behind exposure.csv) are the very scores each realistic row was computed from."""
    from sklearn.metrics import roc_auc_score

    report = full_report
    is_member = np.r_[np.ones(report.num_members, bool), np.zeros(report.num_non_members, bool)]
    realistic = [r for r in report.results if r.threshold_source != "oracle"]
    assert sorted(report.record_scores) == sorted(r.attack for r in realistic)
    for result in realistic:
        scores = report.record_scores[result.attack]
        assert scores.shape == (len(is_member),)
        assert roc_auc_score(is_member, scores) == pytest.approx(result.auc, abs=1e-12), result.attack
        assert result.true_positives == np.count_nonzero(scores[is_member] >= result.threshold)
    assert "record_scores" not in report.to_dict()


def test_lira_rows_match_an_independent_rederivation(full_report, digits, split, shadows, target):
    evaluated = np.concatenate([split.members, split.non_members])
    is_member = np.r_[np.ones(len(split.members), bool), np.zeros(len(split.non_members), bool)]
    y = digits.y[evaluated]
    logits = shadows.logits(digits.x[evaluated])  # (K, n, C)
    phi_shadows = np.stack([compute_signals(logits[k], y, kind="logits").logit_confidence
                            for k in range(shadows.num_shadows)])
    # the IN mask from the pool positions: the online pool holds every evaluated record
    order = np.argsort(shadows.pool)
    pos = order[np.searchsorted(shadows.pool, evaluated, sorter=order)]
    assert np.array_equal(shadows.pool[pos], evaluated)
    in_mask = shadows.masks[:, pos]
    assert set(in_mask.sum(axis=0).tolist()) == {4}
    target_out = target.model.predict(digits.x[evaluated], verbose=0)
    phi_target = compute_signals(target_out, y, kind=full_report.output_kind).logit_confidence
    for online, name in ((True, "LiRA online"), (False, "LiRA offline")):
        expected = LiRA(online=online, fixed_variance=True).fit(phi_shadows, in_mask).evaluate(
            phi_target, is_member)
        got = row(full_report, name, "none")
        assert got.attack == expected.attack
        assert got.auc == pytest.approx(expected.auc, abs=1e-6)
        assert got.accuracy == pytest.approx(expected.accuracy, abs=1e-6)
        assert got.advantage == pytest.approx(expected.advantage, abs=1e-6)
        assert got.tpr_at_fpr == pytest.approx(expected.tpr_at_fpr, abs=1e-6)


def test_offline_pool_runs_offline_lira_and_skips_online(digits, split, target):
    offline_shadows = train_shadows(digits, shadow_pool(split, "offline"),
                                    TrainConfig("mlp", epochs=10), num_shadows=4, seed=2)
    assert np.intersect1d(offline_shadows.pool, np.r_[split.members, split.non_members]).size == 0
    report = run_attacks(target.model, digits, split.members, split.non_members,
                         shadows=offline_shadows, attacks="all")
    assert not any(r.attack.startswith("LiRA online") for r in report.results)
    assert any("skipped lira_online" in note for note in report.notes)
    assert row(report, "LiRA offline", "none").auc > 0.55  # measured 0.65
    assert row(report, "loss", "shadow")  # shadow calibration works from a disjoint pool
    for explicit in ("lira_online", "lira"):
        with pytest.raises(TfmiError, match="LiRA online needs shadows"):
            run_attacks(target.model, digits, split.members, split.non_members,
                        shadows=offline_shadows, attacks=explicit)


def test_shadow_pool_modes(split):
    online = shadow_pool(split, "online")
    assert np.array_equal(online, np.sort(np.r_[split.members, split.non_members]))
    assert np.array_equal(shadow_pool(split, "offline"), split.shadow_pool)
    with pytest.raises(TfmiError, match="unknown shadow pool mode"):
        shadow_pool(split, "both")


def test_options_per_class_bootstrap_classifier_and_variance(digits, split, target, shadows):
    report = run_attacks(target.model, digits, split.members, split.non_members, shadows=shadows,
                         attacks="loss,top3,lira_online", per_class=True, bootstrap=20,
                         learned_classifier="logistic", lira_fixed_variance=False)
    assert [(r.attack, r.threshold_source) for r in report.results] == [
        ("loss per class", "shadow"), ("loss", "oracle"), ("top3 (logistic)", "shadow"),
        ("LiRA online", "none")]
    for r in report.results:
        low, high = r.auc_ci
        assert low <= r.auc <= high and high - low < 0.2


# --- flip queries ----------------------------------------------------------------------------------

def test_flip_adds_a_second_lira_query_on_images(digits, split, target, shadows, full_report):
    assert digits.x.ndim == 4
    flipped = flip_horizontally(digits.x[:3])
    assert np.array_equal(flipped[:, :, 0], digits.x[:3, :, -1])
    report = run_attacks(target.model, digits, split.members, split.non_members, shadows=shadows,
                         attacks="lira", flip=True)
    assert [r.attack for r in report.results] == ["LiRA online, fixed variance",
                                                  "LiRA offline, fixed variance"]
    for name in ("LiRA online", "LiRA offline"):
        with_flip, without = row(report, name, "none"), row(full_report, name, "none")
        assert with_flip.auc > 0.55
        assert with_flip.auc != without.auc  # the flipped query changes the scores


def test_flip_on_tabular_data_is_an_error():
    rng = np.random.default_rng(0)
    table = make_dataset(rng.normal(size=(40, 5)).astype("float32"), np.arange(40) % 2)
    def model(x):
        return np.stack([x[:, 0], -x[:, 0]], axis=1)
    run_attacks(model, table, np.arange(10), np.arange(10, 20), attacks="gap")  # works unflipped
    with pytest.raises(TfmiError, match="flip augmentation needs images"):
        run_attacks(model, table, np.arange(10), np.arange(10, 20), attacks="gap", flip=True)


# --- the report ------------------------------------------------------------------------------------

def test_report_round_trip_and_best(full_report):
    d = full_report.to_dict()
    again = AttackReport.from_dict(d)
    assert again.to_dict() == d
    assert d["generalization_gap"] == pytest.approx(d["train_accuracy"] - d["test_accuracy"])
    best = full_report.best()
    assert best.threshold_source != "oracle"
    realistic = [r for r in full_report.results if r.threshold_source != "oracle"]
    assert best.advantage == max(r.advantage for r in realistic)
    best_any = full_report.best(include_oracle=True)
    assert best_any.advantage == max(r.advantage for r in full_report.results)
    # a report of oracle rows only: best() has nothing realistic to return
    oracle_only = AttackReport.from_dict({**d, "results": [r for r in d["results"]
                                                            if r["threshold_source"] == "oracle"]})
    with pytest.raises(TfmiError, match="no attack results"):
        oracle_only.best()
    assert oracle_only.best(include_oracle=True).threshold_source == "oracle"
    with pytest.raises(TfmiError, match="not a saved attack report"):
        AttackReport.from_dict({"results": []})
    with pytest.raises(TfmiError, match="no result"):
        full_report.result("nope")


# --- bad input -------------------------------------------------------------------------------------

def test_bad_input(digits, split, target):
    members, non_members = split.members, split.non_members
    with pytest.raises(TfmiError, match="share records"):
        run_attacks(target.model, digits, members, np.r_[non_members, members[:1]])
    with pytest.raises(TfmiError, match="outside the dataset"):
        run_attacks(target.model, digits, np.r_[members, len(digits)], non_members)
    with pytest.raises(TfmiError, match="outside the dataset"):
        run_attacks(target.model, digits, members, np.r_[non_members, -1])
    with pytest.raises(TfmiError, match="integer record indices"):
        run_attacks(target.model, digits, members.astype(float), non_members)
    with pytest.raises(TfmiError, match="non-empty 1-D"):
        run_attacks(target.model, digits, members, np.zeros(0, np.int64))

    def three_columns(x):
        return np.tile([[1.0, 2.0, 3.0]], (len(x), 1))
    with pytest.raises(TfmiError, match="outputs 3 scores per example but the data has 10 classes"):
        run_attacks(three_columns, digits, members, non_members, attacks="gap")

    def nan_outputs(x):
        out = np.zeros((len(x), 10))
        out[0, 3] = np.nan
        return out
    with pytest.raises(TfmiError, match="NaN or infinity"):
        run_attacks(nan_outputs, digits, members, non_members, attacks="gap")


# --- real data (slow) ------------------------------------------------------------------------------

@pytest.mark.slow
def test_lira_beats_threshold_attacks_on_location30(shared_data_dir):
    data = load_dataset("location30", data_dir=shared_data_dir)
    split = membership_split(data.y, target_size=1500, seed=0)
    config = TrainConfig("mlp", epochs=30)
    target = train_target(data, split, config, verbose=0)
    shadows = train_shadows(data, shadow_pool(split, "online"), config, num_shadows=16, seed=1)
    report = run_attacks(target.model, data, split.members, split.non_members, shadows=shadows,
                         attacks="all")
    train_acc, test_acc = numpy_accuracies(target.model, data, split.members, split.non_members)
    assert report.result("gap").accuracy == pytest.approx(0.5 + (train_acc - test_acc) / 2, abs=1e-9)
    lira = row(report, "LiRA online", "none")
    threshold_rows = [r for r in report.results
                      if r.attack in ORACLE_ATTACKS and r.threshold_source in ("shadow", "oracle")]
    assert len(threshold_rows) == 2 * len(ORACLE_ATTACKS)
    best_threshold = max(r.tpr_at_fpr[0.01] for r in threshold_rows)
    # measured earlier: 0.813 vs 0.021
    assert lira.tpr_at_fpr[0.01] > best_threshold
    assert lira.tpr_at_fpr[0.01] > 0.3


@pytest.mark.parametrize("command", ["audit", "benchmark"])
def test_attacks_help_names_every_group_parse_attacks_takes(command):
    from click.testing import CliRunner

    from cli.main import cli
    from tfmi.attacks.suite import ATTACK_GROUPS

    text = " ".join(CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output.split())
    help_line = text[text.index("--attacks TEXT"):][:200]
    for group in ATTACK_GROUPS:
        assert group in help_line and parse_attacks(group) == ATTACK_GROUPS[group]
