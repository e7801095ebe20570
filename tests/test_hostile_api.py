"""Hostile input to the Python API: every bad value is a one-line `TfmiError` that says how to fix it.

Covers split files, forged and mismatched ``.npz`` files, dataset names, label arrays, defense
parameters, the attack API, and the one-way layering of the package.
"""

from __future__ import annotations

import ast
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import random_binary, shokri_rows, write_tgz
from tfmi.attacks import metrics
from tfmi.data import MembershipSplit, load_dataset, membership_split
from tfmi.errors import TfmiError

TFMI = Path(__file__).resolve().parents[1] / "tfmi"


def raises_one_line(call, *fragments: str) -> str:
    """Run ``call``; check it raises exactly `TfmiError` with a one-line message holding ``fragments``."""
    with pytest.raises(TfmiError) as caught:
        call()
    message = str(caught.value)
    assert caught.type is TfmiError
    assert "\n" not in message and message.strip() == message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def npy_bytes(header: dict, payload: bytes) -> bytes:
    """An ``.npy`` file: a version 1.0 header saying ``header`` followed by ``payload``."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + payload


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def npy_of(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=True)
    return out.getvalue()


def forged_npz(path: Path, key: str, others: dict[str, np.ndarray]) -> Path:
    """An ``.npz`` whose member ``key`` claims 10**12 x 446 float64 values but holds 16 bytes."""
    huge = npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (10**12, 446)}, b"\0" * 16)
    return write_zip(path, {f"{key}.npy": huge, **{f"{k}.npy": npy_of(v) for k, v in others.items()}})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# --- 1. split files -------------------------------------------------------------------------------

GOOD_ROLES = {
    "members": np.arange(0, 10), "non_members": np.arange(10, 20),
    "reference": np.arange(20, 25), "shadow_pool": np.arange(25, 30),
}


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"members": np.array([-1, 0, 1])}, ["negative record index -1", "re-run tfmi train"]),
        ({"members": np.arange(10) + 0.5}, ["float64 values, not integer record indices",
                                            "re-run tfmi train"]),
        ({"members": np.array(["a", "b"])}, ["not integer record indices", "re-run tfmi train"]),
        ({"shadow_pool": np.arange(25, 31)}, ["indexes record 30 but the dataset has 30",
                                              "different dataset", "re-run tfmi train"]),
        ({"non_members": np.arange(5, 15)}, ["members and non_members share 5 record(s)",
                                             "re-run tfmi train"]),
        ({"reference": np.array([20, 20, 21])}, ["lists a record more than once", "re-run tfmi train"]),
        ({"members": np.arange(10).reshape(2, 5)}, ["not a 1-D list", "re-run tfmi train"]),
        ({"seed": np.arange(3)}, ["seed must be one integer", "re-run tfmi train"]),
    ],
)
def test_split_file_with_bad_indices_names_the_file_and_the_fix(tmp_path, change, fragments):
    path = tmp_path / "split.npz"
    np.savez(path, **{"seed": np.int64(0), **GOOD_ROLES, **change})
    raises_one_line(lambda: MembershipSplit.load(path, num_records=30), "split.npz", *fragments)


def test_split_that_fits_loads_and_checks(tmp_path):
    MembershipSplit(3, *GOOD_ROLES.values()).save(tmp_path / "split.npz")
    split = MembershipSplit.load(tmp_path / "split.npz", num_records=30)
    split.check(30)
    assert split.seed == 3 and split.members.dtype == np.int64
    np.savez(tmp_path / "empty_pool.npz", seed=np.int64(0), **{**GOOD_ROLES, "shadow_pool": np.zeros(0)})
    assert len(MembershipSplit.load(tmp_path / "empty_pool.npz", num_records=30).shadow_pool) == 0


@pytest.mark.parametrize(
    "roles, num_records, fragments",
    [
        ({"members": np.array([0, 40])}, 30, ["the split: members indexes record 40", "different dataset"]),
        ({"reference": np.arange(5, 8)}, 30, ["members and reference share 3", "re-run tfmi train"]),
        ({"members": np.array([0.0, 1.0])}, 30, ["float64 values", "re-run tfmi train"]),
        ({}, "30", ["num_records must be an integer >= 0"]),
    ],
)
def test_split_check_is_public_for_callers(roles, num_records, fragments):
    split = MembershipSplit(0, *{**GOOD_ROLES, **roles}.values())
    raises_one_line(lambda: split.check(num_records), *fragments)


@pytest.mark.parametrize(
    "split, fragments",
    [
        ("other data", ["the split: members indexes record", "different dataset", "re-run tfmi train"]),
        ("overlap", ["members and reference share", "re-run tfmi train"]),
        ("not a split", ["expected a MembershipSplit, got tuple", "membership_split"]),
    ],
)
def test_train_target_checks_the_split_against_the_data(digits, split, fragments):
    from tfmi.training import TrainConfig, train_target

    if split == "other data":
        split = membership_split(np.arange(4000) % 10, target_size=100, seed=0)
    elif split == "overlap":
        good = membership_split(digits.y, target_size=100, seed=0)
        split = MembershipSplit(0, good.members, good.non_members, good.members[:3], good.shadow_pool)
    else:
        split = (np.arange(10), np.arange(10, 20))
    raises_one_line(lambda: train_target(digits, split, TrainConfig("mlp", epochs=1), verbose=0), *fragments)


@pytest.mark.parametrize(
    "kind, fragments",
    [
        ("garbage", ["not a valid split file (.npz)", "replace it"]),
        ("truncated", ["not a valid split file (.npz)", "replace it"]),
        ("single_npy", ["single .npy array", "np.savez"]),
        ("object_array", ["array 'members' holds Python objects", "save numeric arrays"]),
        ("forged_shape", ["array 'members' claims shape (1000000000000, 446)", "corrupt or truncated"]),
    ],
)
def test_corrupt_split_file_is_a_tfmi_error(tmp_path, kind, fragments):
    path = tmp_path / "split.npz"
    if kind == "garbage":
        path.write_bytes(b"this is no zip archive")
    elif kind == "truncated":
        np.savez(path, seed=np.int64(0), **GOOD_ROLES)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "single_npy":
        path.write_bytes(npy_of(np.arange(3)))
    elif kind == "object_array":
        write_zip(path, {"seed.npy": npy_of(np.int64(0)),
                         "members.npy": npy_of(np.array([1, "a"], dtype=object))})
    else:
        forged_npz(path, "members", {"seed": np.int64(0)})
    raises_one_line(lambda: MembershipSplit.load(path), str(path), *fragments)


# --- 2. forged .npy headers -------------------------------------------------------------------------


def _user_npz(folder: Path, make) -> object:
    path = make(folder / "data.npz")
    return lambda: load_dataset(str(path))


def _named_npz(folder: Path, make) -> object:
    make(folder / "location30.npz")
    return lambda: load_dataset("location30", folder)


@pytest.mark.parametrize("entry", [_user_npz, _named_npz], ids=["user file", "named dataset"])
@pytest.mark.parametrize(
    "make, fragments",
    [
        (lambda p: forged_npz(p, "x", {"y": np.zeros(3, np.int64)}),
         ["array 'x' claims shape (1000000000000, 446) of float64 (3568000000000000 bytes) "
          "but holds 16 bytes", "corrupt or truncated"]),
        (lambda p: write_zip(p, {"x.npy": npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (2, 2)},
                                                    b"\0" * 64),
                                 "y.npy": npy_of(np.zeros(2, np.int64))}),
         ["array 'x' claims shape (2, 2) of float32 (16 bytes) but holds 64 bytes", "corrupt or truncated"]),
        (lambda p: write_zip(p, {"x.npy": npy_of(np.array([[1, "a"]], dtype=object)),
                                 "y.npy": npy_of(np.zeros(1, np.int64))}),
         ["array 'x' holds Python objects (dtype object)", "save numeric arrays"]),
        (lambda p: write_zip(p, {"x.npy": b"\x93NUMPY\x01\x00garbage", "y.npy": npy_of(np.zeros(1))}),
         ["array 'x' has no valid .npy header", "replace it"]),
    ],
    ids=["huge shape", "short shape", "object dtype", "bad header"],
)
def test_npz_members_are_checked_before_loading(tmp_path, entry, make, fragments):
    raises_one_line(entry(tmp_path, make), *fragments)


# --- 3. named datasets holding another dataset's data ------------------------------------------------


def _location_npz(folder: Path, features: int, classes: int) -> None:
    rng = np.random.default_rng(0)
    np.savez(folder / "location30.npz", features=rng.integers(0, 2, (60, features)),
             labels=np.arange(60) % classes + 1)


@pytest.mark.parametrize(
    "name, write, fragments",
    [
        ("location30", lambda d: _location_npz(d, 10, 30),
         ["location30.npz has 10 features per record but location30 has 446", "replace"]),
        ("location30", lambda d: _location_npz(d, 446, 40),
         ["labels range 1..40, but location30 has classes 1..30", "replace it with dataset_location.tgz"]),
        ("purchase100", lambda d: write_tgz(d / "dataset_purchase.tgz", {
            "dataset_purchase": shokri_rows(*random_binary(20, 5, 10)[::-1], quote_labels=False)}),
         ["dataset_purchase.tgz has 5 features per record but purchase100 has 600", "replace"]),
        ("texas100", lambda d: write_tgz(d / "dataset_texas.tgz", {
            "texas/100/feats": b"1,0,1\n0,1,1\n", "texas/100/labels": b"1\n2\n"}),
         ["dataset_texas.tgz has 3 features per record but texas100 has 6169", "replace"]),
        ("purchase100", lambda d: write_tgz(d / "dataset_purchase.tgz", {
            "dataset_purchase": shokri_rows(np.array([1, 101]), np.zeros((2, 600), int), False)}),
         ["labels range 1..101, but purchase100 has classes 1..100", "replace it"]),
    ],
)
def test_named_dataset_of_the_wrong_shape_says_which_file_to_replace(tmp_path, name, write, fragments):
    write(tmp_path)
    raises_one_line(lambda: load_dataset(name, tmp_path), *fragments)


# --- 4. dataset names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, 5, b"digits", ["digits"]])
def test_load_dataset_refuses_a_name_that_is_not_a_string_or_path(name):
    raises_one_line(lambda: load_dataset(name), "the dataset must be a name or a path", "use one of digits")


def test_load_dataset_refuses_a_data_dir_that_is_not_a_path():
    raises_one_line(lambda: load_dataset("digits", data_dir=5), "the data dir must be a folder path")


# --- 5. labels of a membership split -------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, kwargs, fragments",
    [
        (np.eye(10)[np.arange(100) % 10], {}, ["got shape (100, 10)", "argmax(axis=1)"]),
        (np.array(["cat", "dog"] * 50), {}, ["integer class indices, got dtype <U3", "np.unique"]),
        (np.arange(100) % 10, {"seed": "a"}, ["seed must be an integer, got 'a'"]),
        (np.arange(100) % 10, {"target_size": "10"}, ["target size must be a positive integer"]),
        (np.arange(100) % 10, {"reference_size": 2.5}, ["reference size must be an integer between 0 and"]),
    ],
)
def test_membership_split_refuses_labels_it_cannot_stratify(labels, kwargs, fragments):
    kwargs = {"target_size": 10, **kwargs}
    raises_one_line(lambda: membership_split(labels, **kwargs), *fragments)


# --- 6. defense parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, fragments",
    [
        ("mmd", {"mmd_weight": "a"}, ["mmd: mmd_weight must be a number >= 0, got 'a'", "--mmd-weight"]),
        ("mmd", {"mmd_weight": -1}, ["mmd_weight must be a number >= 0, got -1"]),
        ("mmd-mixup", {"mmd_weight": float("nan")}, ["mmd_weight must be a number >= 0, got nan"]),
        ("mmd", {"gap_threshold": 1.5}, ["gap_threshold must be in [0, 1), got 1.5", "--gap-threshold"]),
        ("mmd", {"gap_threshold": -0.1}, ["gap_threshold must be in [0, 1)"]),
        ("mmd", {"mmd_bandwidths": ()}, ["mmd_bandwidths must be one or more numbers > 0",
                                         "--mmd-bandwidth"]),
        ("mmd", {"mmd_bandwidths": (1.0, -2.0)}, ["mmd_bandwidths must be a positive number, got -2.0"]),
        ("mmd", {"mmd_bandwidths": "wide"}, ["mmd_bandwidths must be one or more numbers > 0"]),
        ("mixup", {"mixup_alpha": 0}, ["mixup_alpha must be a positive number, got 0", "1.0 is usual"]),
        ("mmd-mixup", {"mixup_alpha": "a"}, ["mixup_alpha must be a positive number"]),
        ("dp-sgd", {"noise_multiplier": -1}, ["noise_multiplier must be a number >= 0",
                                              "--noise-multiplier"]),
        ("dp-sgd", {"l2_norm_clip": 0}, ["l2_norm_clip must be a positive number, got 0", "--l2-norm-clip"]),
        ("dp-sgd", {"target_epsilon": 0}, ["target_epsilon must be a positive number", "--target-epsilon"]),
        ("dp-sgd", {"delta": 1.0}, ["delta must be in (0, 1), got 1.0", "--delta"]),
        ("dp-sgd", {"delta": 0}, ["delta must be in (0, 1), got 0"]),
        ("dp-sgd", {"microbatches": 0}, ["microbatches must be a positive integer, got 0", "--microbatches"]),
        ("dp-sgd", {"microbatches": 2.5}, ["microbatches must be a positive integer, got 2.5"]),
        ("dp-sgd", {"dp_path": "fastest"}, ["dp_path must be one of auto, fast", "--dp-path"]),
        ("advreg", {"attack_steps": 0}, ["attack_steps must be a positive integer, got 0", "--attack-steps"]),
        ("advreg", {"adv_weight": "a"}, ["adv_weight must be a number >= 0, got 'a'"]),
        ("l2", {"l2": "a"}, ["l2 must be a positive number, got 'a'", "--l2"]),
        ("dropout", {"dropout": 1.0}, ["dropout must be in (0, 1), got 1.0"]),
        ("early-stopping", {"patience": True}, ["patience must be a positive integer, got True"]),
        ("relaxloss", {"relax_alpha": "a"}, ["relax_alpha must be a positive number"]),
    ],
)
def test_defense_config_checks_every_field_of_its_defense(name, kwargs, fragments):
    from tfmi.defenses.config import DefenseConfig

    raises_one_line(lambda: DefenseConfig(name, **kwargs), f"{name}: ", *fragments)


def test_defense_config_normalizes_what_it_checked():
    from tfmi.defenses.config import DefenseConfig

    config = DefenseConfig("mmd", mmd_weight=np.float32(2.0), mmd_bandwidths=[0.5, np.int64(2)])
    assert config.mmd_weight == 2.0 and type(config.mmd_weight) is float
    assert config.mmd_bandwidths == (0.5, 2.0)
    assert DefenseConfig("l2", mmd_weight=-1.0).l2 == 1e-3  # fields of other defenses are ignored
    raises_one_line(lambda: DefenseConfig("mmd", mmd_schedule=["paper"]), "unknown MMD schedule",
                    "use paper or joint")


@pytest.fixture(scope="module")
def tiny():
    from tfmi.models import build_model

    rng = np.random.default_rng(0)
    reference = (rng.random((8, 5), np.float32), np.arange(8) % 2)
    return lambda: build_model("mlp", (5,), 2, seed=0), reference


@pytest.mark.parametrize(
    "wrapper, kwargs, fragments",
    [
        ("mmd", {"mmd_weight": "a"}, ["mmd_weight must be a number >= 0, got 'a'"]),
        ("mmd", {"gap_threshold": "x"}, ["gap_threshold must be in [0, 1), got 'x'"]),
        ("mmd", {"bandwidths": "a"}, ["MMD bandwidths must be one or more numbers > 0"]),
        ("mmd", {"bandwidths": [1.0, float("inf")]}, ["an MMD bandwidth must be a positive number, got inf"]),
        ("mmd", {"mixup_alpha": "a"}, ["mixup_alpha must be a positive number", "1.0 is usual"]),
        ("mmd", {"seed": "a"}, ["seed must be an integer, got 'a'"]),
        ("advreg", {"adv_weight": "a"}, ["adv_weight must be a number >= 0, got 'a'", "1.0 is usual"]),
        ("advreg", {"attack_learning_rate": "a"}, ["attack_learning_rate must be a positive number"]),
        ("relaxloss", {"alpha": "a"}, ["alpha (the target training loss) must be a positive number"]),
        ("relaxloss", {"upper": "a"}, ["upper (a confidence cap) must be in (0, 1], got 'a'"]),
    ],
)
def test_defense_wrappers_check_their_parameters(tiny, wrapper, kwargs, fragments):
    from tfmi.defenses.advreg import AdvRegModel
    from tfmi.defenses.mmd_mixup import MMDMixupModel
    from tfmi.defenses.relaxloss import RelaxLossModel

    build, reference = tiny
    calls = {
        "mmd": lambda: MMDMixupModel(build(), reference, **kwargs),
        "advreg": lambda: AdvRegModel(build(), reference, **kwargs),
        "relaxloss": lambda: RelaxLossModel(build(), **kwargs),
    }
    raises_one_line(calls[wrapper], *fragments)


# --- 7. the attack API ----------------------------------------------------------------------------------


def _signals():
    from tfmi.attacks.signals import compute_signals

    return compute_signals(np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 0.0]]), [0, 1, 0, 0])


def _threshold_fit(flags=(True, False, True, False), labels=(0, 1, 0, 0), signals=None):
    from tfmi.attacks.threshold import ThresholdAttack

    return ThresholdAttack("loss", per_class=True).fit(
        _signals() if signals is None else signals, np.array(labels), np.array(flags))


def _lira(in_mask=None, is_member=None, statistics=None):
    from tfmi.attacks.lira import LiRA

    rng = np.random.default_rng(0)
    lira = LiRA(online=False, fixed_variance=True)
    if in_mask is not None or statistics is not None:
        return lira.fit(rng.random((3, 4)) if statistics is None else statistics,
                        np.zeros((3, 4), bool) if in_mask is None else in_mask)
    return lira.fit(rng.random((3, 4)), np.zeros((3, 4), bool)).evaluate(rng.random(4), is_member)


def _shokri(flags):
    from tfmi.attacks.learned import ShokriAttack

    return ShokriAttack(classifier="logistic").fit(np.eye(2)[[0, 1, 0, 1]] * 3.0, [0, 1, 0, 1], flags)


STRING_FLAGS = np.array(["yes", "no", "yes", "no"])


@pytest.mark.parametrize(
    "call, fragments",
    [
        (lambda: metrics.roc_curve([0.1, 0.9, 0.2, 0.3], STRING_FLAGS),
         ["is_member must be boolean (or 0/1)", "got dtype <U3", "convert the flags"]),
        (lambda: _threshold_fit(flags=STRING_FLAGS), ["shadow membership flags must be boolean", "convert"]),
        (lambda: _threshold_fit(flags=(0.5, 0, 1, 0)), ["got the value 0.5", "convert"]),
        (lambda: _threshold_fit(labels=("a", "b", "a", "b")), ["shadow labels must be integer class indices",
                                                               "np.unique"]),
        (lambda: _threshold_fit(signals=[1.0, 2.0]), ["threshold attacks take Signals, got list",
                                                      "compute_signals"]),
        (lambda: _lira(is_member=STRING_FLAGS), ["membership flags must be boolean", "convert"]),
        (lambda: _lira(in_mask=np.full((3, 4), "no")), ["the IN mask must be boolean", "ShadowSet's masks"]),
        (lambda: _lira(statistics=np.full((3, 4), "a")), ["shadow statistics must be numbers",
                                                          "logit_confidence"]),
        (lambda: _shokri(STRING_FLAGS), ["membership flags must be boolean", "convert"]),
        (lambda: metrics.tpr_at_fpr(
            np.array(["a", "b"]), np.array([0.0, 1.0]), 0.1, 10), ["fpr must be a non-empty 1-D array",
                                                                   "roc_curve"]),
        (lambda: metrics.tpr_at_fpr(
            np.array([0.0, 1.0]), np.array([0.0, 1.0]), "1%", 10), ["a target FPR must be in (0, 1]"]),
        (lambda: metrics.evaluate_scores(
            [1.0, 2.0], [0.0], attack="loss", confidence="high"), ["confidence must be in (0, 1)",
                                                                   "0.95 is usual"]),
        (lambda: metrics.evaluate_scores([1.0, 2.0], ["a"], attack="loss"),
         ["non_member_scores must be numeric", "one number per example"]),
        (lambda: metrics.AttackResult.from_dict(None),
         ["not a saved AttackResult", "to_dict()"]),
    ],
    ids=["roc_curve", "threshold flags", "threshold 0.5", "threshold labels", "threshold signals",
         "lira flags", "lira mask", "lira statistics", "shokri flags", "tpr_at_fpr curve",
         "tpr_at_fpr target", "confidence", "scores", "from_dict"],
)
def test_attack_functions_refuse_bad_membership_input(call, fragments):
    raises_one_line(call, *fragments)


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"target": "tabular"}, ["the model takes inputs of shape (5,) per example but the data has "
                                 "(8, 8, 1)", "the dataset it was trained on"]),
        ({"data": "arrays"}, ["data must be a tfmi Dataset, got tuple", "make_dataset"]),
        ({"attacks": 5}, ["attacks must be a comma list or a sequence of names", "'loss,lira'"]),
        ({"shadows": "none"}, ["shadows must be a ShadowSet", "train_shadows"]),
        ({"members": "mask"}, ["members must be integer record indices, got dtype bool", "np.flatnonzero"]),
        ({"members": "2d"}, ["members must be a non-empty 1-D array", "split.members"]),
    ],
)
def test_run_attacks_refuses_mismatched_models_and_indices(digits, change, fragments):
    from tfmi.attacks.suite import run_attacks
    from tfmi.models import build_model

    shape = (5,) if change.get("target") == "tabular" else digits.input_shape
    target = build_model("mlp", shape, 10)
    data = (digits.x, digits.y) if change.get("data") == "arrays" else digits
    members = {"mask": np.arange(len(digits)) < 5, "2d": np.arange(10).reshape(2, 5)}.get(
        change.get("members"), np.arange(5))
    kwargs = {"attacks": change.get("attacks", "loss")}
    if "shadows" in change:
        kwargs["shadows"] = change["shadows"]
    raises_one_line(lambda: run_attacks(target, data, members, np.arange(5, 10), **kwargs), *fragments)


# --- 8. layering ---------------------------------------------------------------------------------------

# lower layers never import higher ones: data -> models -> defenses -> training -> attacks -> the rest
_LAYERS = [
    ("tfmi.errors", 0), ("tfmi.validation", 0), ("tfmi.compat", 0), ("tfmi.data", 1),
    ("tfmi.models", 2), ("tfmi.model_names", 2), ("tfmi.inference", 2), ("tfmi.outputs", 2),
    ("tfmi.defenses", 3), ("tfmi.training", 4), ("tfmi.training_config", 4), ("tfmi.attacks", 5),
]


def _layer(module: str) -> int:
    for prefix, layer in _LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return 6  # artifacts, audit, benchmark, report, model loading, cli ...


def _tfmi_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfmi"):
            found |= {node.module} if node.module != "tfmi" else {f"tfmi.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tfmi")}
    return found


def test_lower_layers_never_import_higher_ones():
    files = [*sorted((TFMI / "data").glob("*.py")), TFMI / "models.py", TFMI / "model_names.py",
             TFMI / "outputs.py",
             *sorted((TFMI / "defenses").glob("*.py")), TFMI / "training.py", TFMI / "training_config.py"]
    if (TFMI / "inference.py").exists():
        files.append(TFMI / "inference.py")
    violations = []
    for path in files:
        module = ".".join(path.relative_to(TFMI.parent).with_suffix("").parts).removesuffix(".__init__")
        for imported in sorted(_tfmi_imports(path)):
            if _layer(imported) > _layer(module):
                violations.append(f"{module} imports {imported}")
    assert violations == []


def test_inference_helpers_live_at_the_models_layer():
    from tfmi import inference

    assert {"accuracy", "predict_in_batches", "export_saved_model"} <= set(vars(inference))
    assert "export_saved_model" not in _defined_names(TFMI / "artifacts.py")
    assert not {"accuracy", "predict_in_batches"} & _defined_names(TFMI / "training.py")


def _defined_names(path: Path) -> set[str]:
    return {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}
