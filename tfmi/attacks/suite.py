"""Run every attack on one target model: threshold attacks, learned shadow attacks and LiRA.

`run_attacks` takes a target (Keras model, loaded SavedModel or callable), a `Dataset` and the
indices of the records to evaluate (members and non-members), plus optionally a `ShadowSet`. Without
shadows only the oracle threshold attacks and the gap attack run (upper bounds, clearly labelled).
With shadows the realistic attacks run too:

- threshold attacks with thresholds calibrated on the shadows' signals on their pool records (whose
  shadow membership the attacker knows);
- the Shokri per-class and Salem top-3 attack classifiers, trained on the shadows' outputs;
- LiRA online (needs shadows trained on pools containing the evaluated records, so every record
  has IN and OUT shadows: see `shadow_pool`) and offline (OUT shadows only).

`shadow_pool(split, "online")` is the evaluated records themselves, members and non-members: each
shadow trains on a random half, the same number of records as the target, which is the LiRA
setting. ``"offline"`` is the split's disjoint shadow pool; online LiRA then cannot run.

>>> from tfmi.data import load_dataset, membership_split
>>> from tfmi.training import TrainConfig, train_target
>>> data = load_dataset("digits")
>>> split = membership_split(data.y, target_size=150, seed=0)
>>> target = train_target(data, split, TrainConfig("mlp", epochs=3), verbose=0)
>>> report = run_attacks(target.model, data, split.members, split.non_members, attacks=["gap", "loss"])
>>> [f"{r.attack} ({r.threshold_source})" for r in report.results]
['gap (none)', 'loss (oracle)']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfmi.attacks.lira import LiRA
from tfmi.attacks.metrics import AttackResult
from tfmi.attacks.names import (  # noqa: F401  (re-exported: tfmi.attacks.suite has always named them)
    ATTACK_GROUPS,
    ATTACK_NAMES,
    LEARNED_ATTACK_NAMES,
    LIRA_ATTACK_NAMES,
    RMIA_ATTACK_NAMES,
    SHADOW_ONLY_ATTACKS,
    THRESHOLD_ATTACK_NAMES,
)
from tfmi.attacks.shadow import ShadowSet
from tfmi.attacks.signals import ModelOutputs, Signals, compute_signals, model_outputs
from tfmi.attacks.threshold import ThresholdAttack
from tfmi.data.dataset import Dataset
from tfmi.data.splits import MembershipSplit
from tfmi.errors import TfmiError
from tfmi.inference import PREDICT_BATCH_SIZE

#: below this many shadows LiRA uses one global variance (Carlini et al. 2022 recommend it for few)
FIXED_VARIANCE_BELOW = 64
SHADOW_POOL_MODES = ("online", "offline")


def parse_attacks(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """Attack names from a comma list or sequence; groups ``all``, ``threshold``, ``learned``, ``lira``.

    >>> parse_attacks("loss,lira")
    ('loss', 'lira_online', 'lira_offline')
    >>> parse_attacks(None) == ATTACK_NAMES
    True
    """
    if spec is None:
        return ATTACK_NAMES
    if not isinstance(spec, str | Iterable):
        raise TfmiError(
            f"attacks must be a comma list or a sequence of names, got {type(spec).__name__} {spec!r}: "
            "e.g. 'loss,lira' or ['loss', 'lira']"
        )
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    chosen: list[str] = []
    for item in filter(None, items):
        names = ATTACK_GROUPS.get(item, (item,))
        for name in names:
            if name not in ATTACK_NAMES:
                raise TfmiError(
                    f"unknown attack {name!r}: use {', '.join(ATTACK_NAMES)} or a group "
                    f"({', '.join(ATTACK_GROUPS)})"
                )
            if name not in chosen:
                chosen.append(name)
    if not chosen:
        raise TfmiError(f"no attack given: use a comma list of {', '.join(ATTACK_NAMES)}, or 'all'")
    return tuple(sorted(chosen, key=ATTACK_NAMES.index))


def shadow_pool(split: MembershipSplit, mode: str = "online") -> np.ndarray:
    """The records shadows train on: ``"online"`` members and non-members; ``"offline"`` the disjoint
    shadow pool (online LiRA cannot run then)."""
    if not isinstance(split, MembershipSplit):
        raise TfmiError(
            f"expected a MembershipSplit, got {type(split).__name__}: "
            "make one with tfmi.data.membership_split"
        )
    if mode == "online":
        return np.sort(np.concatenate([split.members, split.non_members]))
    if mode == "offline":
        if len(split.shadow_pool) < 2:
            raise TfmiError(
                f"the split's shadow pool has {len(split.shadow_pool)} records: offline shadows need a "
                "pool (use a smaller --target-size) or use online shadows"
            )
        return np.asarray(split.shadow_pool)
    raise TfmiError(f"unknown shadow pool mode {mode!r}: use {' or '.join(SHADOW_POOL_MODES)}")


@dataclass
class AttackReport:
    """Every attack's `AttackResult` on one target, with the target's accuracy and the shadow setup."""

    results: list[AttackResult]
    num_members: int
    num_non_members: int
    train_accuracy: float
    test_accuracy: float
    output_kind: str
    num_shadows: int = 0
    shadow_train_accuracy: float | None = None
    shadow_test_accuracy: float | None = None
    notes: list[str] = field(default_factory=list)
    #: shadows (indices into the given set) left out of the shadow-based attacks: they still failed to
    #: train after every retraining (`tfmi.attacks.shadow.given_up_shadows`)
    shadows_left_out: list[int] = field(default_factory=list)
    #: each realistic attack's score per evaluated record (members, then non-members), by result name;
    #: kept in memory for per-record exposure, not written by `to_dict`
    record_scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def generalization_gap(self) -> float:
        return self.train_accuracy - self.test_accuracy

    def result(self, attack: str, threshold_source: str | None = None) -> AttackResult:
        """The result named ``attack`` (and from ``threshold_source``, when given)."""
        for r in self.results:
            if r.attack == attack and threshold_source in (None, r.threshold_source):
                return r
        raise TfmiError(f"no result for attack {attack!r} in this report")

    def best(self, include_oracle: bool = False) -> AttackResult:
        """The result with the highest membership advantage (realistic attacks unless ``include_oracle``)."""
        pool = [r for r in self.results if include_oracle or r.threshold_source != "oracle"]
        if not pool:
            raise TfmiError("the report has no attack results")
        return max(pool, key=lambda r: r.advantage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "num_members": self.num_members,
            "num_non_members": self.num_non_members,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "generalization_gap": self.generalization_gap,
            "output_kind": self.output_kind,
            "num_shadows": self.num_shadows,
            "shadow_train_accuracy": self.shadow_train_accuracy,
            "shadow_test_accuracy": self.shadow_test_accuracy,
            "notes": list(self.notes),
            "shadows_left_out": list(self.shadows_left_out),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttackReport:
        try:
            return cls(
                results=[AttackResult.from_dict(r) for r in d["results"]],
                num_members=int(d["num_members"]),
                num_non_members=int(d["num_non_members"]),
                train_accuracy=float(d["train_accuracy"]),
                test_accuracy=float(d["test_accuracy"]),
                output_kind=str(d["output_kind"]),
                num_shadows=int(d.get("num_shadows", 0)),
                shadow_train_accuracy=d.get("shadow_train_accuracy"),
                shadow_test_accuracy=d.get("shadow_test_accuracy"),
                notes=list(d.get("notes", [])),
                shadows_left_out=[int(k) for k in d.get("shadows_left_out", [])],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise TfmiError(f"not a saved attack report ({type(e).__name__}: {e})") from None


def _check_indices(indices: Any, n: int, what: str) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 1 or len(indices) == 0:
        raise TfmiError(
            f"{what} must be a non-empty 1-D array of record indices, got shape {indices.shape}: "
            "pass e.g. split.members"
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise TfmiError(
            f"{what} must be integer record indices, got dtype {indices.dtype}: pass row numbers of the "
            "dataset (a boolean mask? use np.flatnonzero(mask))"
        )
    if indices.min() < 0 or indices.max() >= n:
        raise TfmiError(
            f"{what} index records outside the dataset's {n}: they were drawn for other data; pass the "
            "dataset the split was made for"
        )
    return indices.astype(np.int64)


def flip_horizontally(x: np.ndarray) -> np.ndarray:
    """Mirror images ``(n, height, width, channels)`` left to right (LiRA's second query)."""
    if x.ndim != 4:
        raise TfmiError(f"flip augmentation needs images (n, height, width, channels), got shape {x.shape}")
    return np.ascontiguousarray(x[:, :, ::-1, :])


def _flat_signals(logits: np.ndarray, labels: np.ndarray) -> Signals:
    """Signals of (K, n, C) shadow logits against labels (n,), flattened shadow-major to (K * n,)."""
    k, n, c = logits.shape
    return compute_signals(logits.reshape(k * n, c), np.tile(labels, k), kind="logits")


def run_attacks(
    target: Any,
    data: Dataset,
    members: Any,
    non_members: Any,
    *,
    attacks: str | Iterable[str] | None = None,
    shadows: ShadowSet | None = None,
    population: Any = None,
    outputs: str = "auto",
    oracle: bool = True,
    per_class: bool = False,
    learned_classifier: str = "mlp",
    lira_fixed_variance: bool | None = None,
    flip: bool = False,
    bootstrap: int = 0,
    seed: int = 0,
    batch_size: int = PREDICT_BATCH_SIZE,
) -> AttackReport:
    """Attack ``target`` on ``data`` records ``members`` (trained on) and ``non_members`` (not).

    Args:
        attacks: names or groups (`parse_attacks`); default all. Shadow-only attacks are skipped,
            with a note, when no shadows are given, unless named explicitly (then an error).
        shadows: a `ShadowSet` trained on ``data`` records (`train_shadows`); evaluated records in
            its pool get IN/OUT statistics, others count as OUT for every shadow.
        population: RMIA's population, record indices of ``data`` the attacker holds that the target
            did not train on, never the evaluated ones (e.g. ``split.reference``). Default: the
            shadows' pool records that are not evaluated; the online pool has none, so then pass one
            (else RMIA is skipped with a note, or an error when named). RMIA uses the unflipped query.
        outputs: ``"auto"``, ``"logits"`` or ``"probabilities"``: what the target returns.
        oracle: also report each threshold attack with the oracle threshold (an upper bound).
        per_class: calibrate threshold attacks per class instead of globally.
        learned_classifier: ``"mlp"`` or ``"logistic"`` for the Shokri and top-3 attacks.
        lira_fixed_variance: None picks a global variance below `FIXED_VARIANCE_BELOW` shadows.
        flip: add horizontally flipped images as a second LiRA query.
        bootstrap: resamples for confidence intervals (0: none).
    """
    if not isinstance(data, Dataset):
        raise TfmiError(
            f"data must be a tfmi Dataset, got {type(data).__name__}: wrap arrays with "
            "tfmi.data.make_dataset(x, y) or load one with tfmi.data.load_dataset"
        )
    if shadows is not None and not isinstance(shadows, ShadowSet):
        raise TfmiError(
            f"shadows must be a ShadowSet from tfmi.attacks.train_shadows, got {type(shadows).__name__}"
        )
    requested = parse_attacks(attacks)
    explicit = attacks is not None and not (isinstance(attacks, str) and attacks.strip() == "all")
    members = _check_indices(members, len(data), "members")
    non_members = _check_indices(non_members, len(data), "non-members")
    if np.intersect1d(members, non_members).size:
        raise TfmiError("members and non-members share records: a record is either trained on or not")
    if population is not None:
        population = _check_indices(population, len(data), "population")
        if len(np.unique(population)) != len(population):
            raise TfmiError("the population repeats records: pass each record once (e.g. np.unique(...))")
        if np.intersect1d(population, np.r_[members, non_members]).size:
            raise TfmiError("the population shares records with the members or non-members: RMIA compares "
                            "them with other records; pass records outside the evaluation (split.reference)")
    notes: list[str] = []
    if shadows is None:
        missing = [a for a in requested if a in SHADOW_ONLY_ATTACKS]
        if missing and explicit:
            raise TfmiError(f"{', '.join(missing)} need shadow models: train them (--shadows K) first")
        if missing:
            notes.append(f"skipped {', '.join(missing)}: they need shadow models")
        requested = tuple(a for a in requested if a not in SHADOW_ONLY_ATTACKS)
    queries: list[Callable] = [lambda x: x]
    if flip:
        flip_horizontally(data.x[:1])  # fails early for non-images
        queries.append(flip_horizontally)

    evaluated = np.concatenate([members, non_members])
    is_member = np.r_[np.ones(len(members), bool), np.zeros(len(non_members), bool)]
    x_eval, y_eval = data.x[evaluated], np.asarray(data.y[evaluated])
    target_out = [model_outputs(target, q(x_eval), outputs=outputs, batch_size=batch_size) for q in queries]
    if target_out[0].num_classes != data.num_classes:
        raise TfmiError(
            f"the model outputs {target_out[0].num_classes} scores per example but the data has "
            f"{data.num_classes} classes: audit it on data labelled for this model"
        )
    signals = compute_signals(target_out[0], y_eval)
    sig_m, sig_n = signals.select(is_member), signals.select(~is_member)
    correct = signals.correct
    report = AttackReport(
        results=[], num_members=len(members), num_non_members=len(non_members),
        train_accuracy=float(correct[is_member].mean()), test_accuracy=float(correct[~is_member].mean()),
        output_kind=target_out[0].kind, notes=notes,
    )
    y_m, y_n = y_eval[is_member], y_eval[~is_member]
    eval_kwargs = {"bootstrap": bootstrap, "seed": seed}

    shadow_logits = shadow_labels = shadow_in = shadow_signals = lira_inputs = None
    if shadows is not None:
        if shadows.retrained.any():
            shadows = _without_given_up(shadows, data, notes, report, lira_fixed_variance)
        report.num_shadows = shadows.num_shadows
        report.shadow_train_accuracy = float(np.nanmean(shadows.train_accuracy))
        report.shadow_test_accuracy = float(np.nanmean(shadows.test_accuracy))
        pool_x, pool_labels = data.x[shadows.pool], np.asarray(data.y[shadows.pool])
        shadow_logits = shadows.logits(pool_x, batch_size)
        shadow_labels = np.tile(pool_labels, shadows.num_shadows)  # shadow-major, like the flat rows
        shadow_in = shadows.masks.ravel()
        if any(a in THRESHOLD_ATTACK_NAMES and a != "gap" for a in requested):
            shadow_signals = _flat_signals(shadow_logits, pool_labels)
        if any(a in LIRA_ATTACK_NAMES for a in requested):
            lira_inputs = _lira_statistics(shadows, shadow_logits, data, evaluated, y_eval, target_out,
                                           queries, batch_size)

    def keep(result: AttackResult, scores: np.ndarray) -> None:
        report.results.append(result)
        report.record_scores[result.attack] = np.asarray(scores, np.float64)

    for name in requested:
        if name in THRESHOLD_ATTACK_NAMES:
            attack = ThresholdAttack(name, per_class=per_class and name != "gap")
            if name == "gap" or shadows is None:
                if name == "gap":
                    fitted = attack.fit_on_membership(sig_m, sig_n)
                    keep(fitted.evaluate(sig_m, sig_n),
                         np.r_[fitted.score_samples(sig_m), fitted.score_samples(sig_n)])
            else:
                fitted = attack.fit(shadow_signals, shadow_labels, shadow_in)
                keep(fitted.evaluate(sig_m, sig_n, y_m, y_n, **eval_kwargs),
                     np.r_[fitted.score_samples(sig_m, y_m), fitted.score_samples(sig_n, y_n)])
            if oracle and name != "gap":
                report.results.append(ThresholdAttack(name).evaluate_oracle(sig_m, sig_n, **eval_kwargs))
        elif name in LEARNED_ATTACK_NAMES:
            from tfmi.attacks.learned import ShokriAttack, Top3Attack

            cls = ShokriAttack if name == "shokri" else Top3Attack
            k, n, c = shadow_logits.shape
            learned = cls(classifier=learned_classifier, seed=seed).fit(
                ModelOutputs(shadow_logits.reshape(k * n, c), "logits"), shadow_labels, shadow_in)
            values = target_out[0]
            out_m = ModelOutputs(values.values[is_member], values.kind)
            out_n = ModelOutputs(values.values[~is_member], values.kind)
            keep(learned.evaluate(out_m, out_n, y_m, y_n, **eval_kwargs),
                 np.r_[learned.score_samples(out_m, y_m), learned.score_samples(out_n, y_n)])
        elif name in RMIA_ATTACK_NAMES:
            rmia_names = [a for a in requested if a in RMIA_ATTACK_NAMES]
            if name == rmia_names[0]:  # one pass for every variant: population outputs computed once
                for result, scores in _rmia(rmia_names, target, data, shadows, shadow_logits, evaluated,
                                            y_eval, signals, is_member, population, target_out[0].kind,
                                            batch_size, eval_kwargs, notes, explicit):
                    keep(result, scores)
        else:
            scored = _lira(name, shadows.num_shadows, lira_inputs, is_member, lira_fixed_variance,
                           eval_kwargs, notes, explicit)
            if scored is not None:
                keep(*scored)
    return report


def _without_given_up(shadows: ShadowSet, data: Dataset, notes: list[str], report: AttackReport,
                      fixed_variance: bool | None) -> ShadowSet:
    """The shadows an attacker fits attacks to: all but those that failed every retraining
    (`given_up_shadows`), unless leaving them out would leave a pool record without an IN or an OUT
    shadow (too few for LiRA); a note says which."""
    from tfmi.attacks.shadow import MAX_RETRAINS, given_up_shadows

    redone = int(np.count_nonzero(shadows.retrained))
    note = (f"{redone} of {shadows.num_shadows} shadows failed to train (accuracy on their own records at "
            "most twice the most common class's share) and were trained again with new seeds")
    given_up = given_up_shadows(shadows, data.y)
    if len(given_up):
        keep = np.setdiff1d(np.arange(shadows.num_shadows), given_up)
        masks = shadows.masks[keep]
        needed = 1 if fixed_variance or (fixed_variance is None and len(keep) < FIXED_VARIANCE_BELOW) else 2
        enough = len(keep) >= 2 and masks.sum(axis=0).min() >= needed and (~masks).sum(axis=0).min() >= needed
        note += f"; {len(given_up)} still failed after {MAX_RETRAINS} retrainings and were "
        if enough:
            note += f"left out of the shadow-based attacks ({len(keep)} used)"
            report.shadows_left_out = given_up.tolist()
            shadows = shadows.select(keep)
        else:
            note += "kept: without them some records would lack IN or OUT shadows"
    notes.append(note)
    return shadows


def shadow_queries(data: Dataset, shadow_pool: np.ndarray, members: np.ndarray, non_members: np.ndarray,
                   population: np.ndarray | None = None, flip: bool = False) -> np.ndarray:
    """Every input `run_attacks` may ask the shadows about, for shadows trained elsewhere
    (`tfmi.attacks.shadow.assemble_shadows`): the pool, the evaluated records, the population, and the
    evaluated records flipped when ``flip``."""
    evaluated = np.concatenate([members, non_members])
    parts = [data.x[np.asarray(shadow_pool)], data.x[evaluated]]
    if population is not None:
        parts.append(data.x[np.asarray(population)])
    if flip:
        parts.append(flip_horizontally(data.x[evaluated]))
    return np.concatenate(parts)


def _lira_statistics(shadows, shadow_logits, data, evaluated, y_eval, target_out, queries, batch_size):
    """LiRA's inputs, computed once for every variant: the (K, n) IN mask of the evaluated records
    (their pool column where they are in the shadows' pool, else OUT everywhere), and the shadows'
    and the target's ``phi`` per query, (K, n, Q) and (n, Q).

    Both ``phi`` come through one rule (`tfmi.attacks.signals.lira_phi`): from logits when the target
    gives them (or ends in a Keras softmax whose logits were recovered), else the shadows' logits go
    through a softmax at the target's float precision, so target and shadows saturate alike."""
    from tfmi.attacks.signals import lira_phi, shadow_lira_phi

    in_mask, position, in_pool = _pool_positions(shadows, evaluated)
    x_eval = data.x[evaluated]
    phis = []
    for q, out in zip(queries, target_out, strict=True):
        if q is queries[0] and in_pool.all():  # the plain query on pool records: logits already known
            logits = shadow_logits[:, position]
        else:
            logits = shadows.logits(q(x_eval), batch_size)
        phis.append(shadow_lira_phi(logits, y_eval, out))
    target_phi = np.stack([lira_phi(out, y_eval) for out in target_out], axis=-1)
    return in_mask, np.stack(phis, axis=-1), target_phi


def _pool_positions(
    shadows: ShadowSet, records: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``records``: their (K, n) IN mask (OUT everywhere for records outside the shadows' pool),
    their column in the pool, and whether they are in it."""
    order = np.argsort(shadows.pool)
    sorted_pool = shadows.pool[order]
    at = np.minimum(np.searchsorted(sorted_pool, records), len(sorted_pool) - 1)
    in_pool = sorted_pool[at] == records
    position = order[at]
    return shadows.masks[:, position] & in_pool[None, :], position, in_pool


def _online_unavailable(label: str, name: str, in_mask: np.ndarray, explicit: bool, notes: list[str]) -> bool:
    """True (with a note, or an error when asked for by name) when no evaluated record has IN shadows."""
    if in_mask.any():
        return False
    message = (f"{label} needs shadows trained on pools that contain the evaluated records "
               "(online shadow pool)")
    if explicit:
        raise TfmiError(message + ": train the shadows on the members and non-members")
    notes.append(f"skipped {name}: {message}")
    return True


def _lira(name, num_shadows, lira_inputs, is_member, fixed_variance, eval_kwargs, notes,
          explicit) -> tuple[AttackResult, np.ndarray] | None:
    online = name == "lira_online"
    in_mask, shadow_phi, target_phi = lira_inputs
    if fixed_variance is None:
        fixed_variance = num_shadows < FIXED_VARIANCE_BELOW
    if online and _online_unavailable("LiRA online", "lira_online", in_mask, explicit, notes):
        return None
    lira = LiRA(online=online, fixed_variance=fixed_variance).fit(shadow_phi, in_mask)
    # too few shadows per record for a pooled within-record spread: say which fallback was used
    borrowed = {side: source for side, source in lira.sd_sources_.items()
                if source not in ("pooled within-example", "per example")}
    if borrowed:
        notes.append(f"{lira.name}: the {' and '.join(s.upper() for s in borrowed)} standard deviation "
                     f"came from {'; '.join(borrowed.values())} (too few shadows per record)")
    return lira.evaluate(target_phi, is_member, **eval_kwargs), lira.score_samples(target_phi)


def _rmia(names, target, data, shadows, shadow_logits, evaluated, y_eval, signals, is_member, population,
          kind, batch_size, eval_kwargs, notes, explicit) -> list[tuple[AttackResult, np.ndarray]]:
    """RMIA's rows for ``names``: the true-class probabilities of the shadows and the target on the
    evaluated records and the population (default: the shadows' pool records not evaluated), and
    the IN masks of both (pool columns, else OUT everywhere), computed once for every variant."""
    from tfmi.attacks.rmia import RMIA

    if population is None:
        population = np.setdiff1d(shadows.pool, evaluated)
        if len(population) == 0:
            message = ("RMIA needs population records, records the target did not train on besides the "
                       "evaluated ones, and the shadows' pool has none")
            if explicit:
                raise TfmiError(message + ": pass population=record indices (e.g. split.reference)")
            notes.append(f"skipped {', '.join(names)}: {message} (pass a population)")
            return []
    def shadow_side(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask, position, in_pool = _pool_positions(shadows, records)
        if in_pool.all():
            logits = shadow_logits[:, position]
        else:
            logits = shadows.logits(data.x[records], batch_size)
        probs = _flat_signals(logits, np.asarray(data.y[records])).true_class_probability
        return mask, probs.reshape(shadows.num_shadows, -1)

    in_mask, shadow_probs = shadow_side(evaluated)
    population_in, population_shadow_probs = shadow_side(population)
    population_out = model_outputs(target, data.x[population], outputs=kind, batch_size=batch_size)
    population_target_probs = compute_signals(population_out,
                                              np.asarray(data.y[population])).true_class_probability
    results = []
    for name in names:
        online = name == "rmia_online"
        if online and _online_unavailable("RMIA online", "rmia_online", in_mask, explicit, notes):
            continue
        rmia = RMIA(online=online).fit(shadow_probs, in_mask, population_target_probs,
                                       population_shadow_probs, population_in_mask=population_in)
        if not online and rmia.offline_a_source_ == "default":
            notes.append(f"{rmia.name}: a={rmia.offline_a_:g} is the default, not tuned (tuning needs 2 or "
                         "more shadows and records each shadow did and did not train on)")
        elif not online:
            notes.append(f"{rmia.name}: a={rmia.offline_a_:g}, tuned on the shadows")
        probs = signals.true_class_probability
        results.append((rmia.evaluate(probs, is_member, **eval_kwargs), rmia.score_samples(probs)))
    return results
