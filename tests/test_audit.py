"""`tfmi audit` end to end: on models tfmi did not write (trained in a subprocess) and on `tfmi train`
output."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from tfmi.attacks.suite import THRESHOLD_ATTACK_NAMES

PNG = b"\x89PNG\r\n\x1a\n"

# Trains a plain Keras MLP without tfmi: logits SavedModel, .keras file and a softmax twin.
TRAIN_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    import keras
    from sklearn.datasets import load_digits

    out = sys.argv[1]
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    order = np.random.default_rng(0).permutation(len(y))
    m, n = order[:300], order[300:600]

    def mlp(last):
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                                    keras.layers.Dense(10, activation=last)])

    model = mlp(None)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[m], y[m], epochs=40, batch_size=32, verbose=0)
    model.export(os.path.join(out, "saved"))
    model.save(os.path.join(out, "model.keras"))
    probs = mlp("softmax")
    probs.set_weights(model.get_weights())
    probs.save(os.path.join(out, "probs.keras"))
    np.savez(os.path.join(out, "members.npz"), x=x[m], y=y[m])
    np.savez(os.path.join(out, "non_members.npz"), x=x[n], y=y[n])
    np.savez(os.path.join(out, "predictions.npz"), members=model.predict(x[m], verbose=0),
             non_members=model.predict(x[n], verbose=0))
""")


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("external")
    script = folder / "train.py"
    script.write_text(TRAIN_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def data_args(folder):
    return ["--members", folder / "members.npz", "--non-members", folder / "non_members.npz"]


def load_report(out):
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def saved_audit(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("audits") / "saved"
    result = run(["audit", trained / "saved", *data_args(trained), "--out", out])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_audit_of_a_plain_saved_model_writes_every_file(trained, saved_audit):
    out, output = saved_audit
    assert sorted(p.name for p in out.iterdir()) == [
        ".tfmi-output", "exposure.csv", "report.json", "report.md", "roc.png", "signals.png"]
    saved = load_report(out)
    report = saved["report"]
    rows = {(r["attack"], r["threshold_source"]) for r in report["results"]}
    assert ("gap", "none") in rows
    for attack in THRESHOLD_ATTACK_NAMES[1:]:
        assert (attack, "oracle") in rows
    assert not any(source == "shadow" for _, source in rows)
    assert report["num_members"] == 300 and report["num_non_members"] == 300
    assert report["output_kind"] == "logits"
    assert saved["meta"]["format"] == "saved_model" and saved["meta"]["signature"] == "serving_default"
    assert any("skipped" in note for note in report["notes"])

    # the gap attack's balanced accuracy is 0.5 + (train acc - test acc) / 2, from the script's outputs
    predictions = np.load(trained / "predictions.npz")
    y_m, y_n = np.load(trained / "members.npz")["y"], np.load(trained / "non_members.npz")["y"]
    train_acc = float(np.mean(predictions["members"].argmax(1) == y_m))
    test_acc = float(np.mean(predictions["non_members"].argmax(1) == y_n))
    assert train_acc > test_acc
    gap = next(r for r in report["results"] if r["attack"] == "gap")
    assert gap["accuracy"] == pytest.approx(0.5 + (train_acc - test_acc) / 2, abs=1e-9)
    assert report["train_accuracy"] == pytest.approx(train_acc, abs=1e-9)

    markdown = (out / "report.md").read_text()
    assert "saved" in markdown and "](roc.png)" in markdown and "](signals.png)" in markdown
    assert "upper bound" in markdown and "| attack | threshold |" in markdown
    for png in ("roc.png", "signals.png"):
        assert (out / png).read_bytes()[:8] == PNG
    assert "TPR@1%FPR" in output and "upper bounds" in output and "gap" in output


def test_audit_with_shadows_runs_calibrated_attacks_and_lira(trained, tmp_path):
    out = tmp_path / "shadowed"
    result = run(["audit", trained / "saved", *data_args(trained), "--shadows", "4", "--shadow-epochs", "5",
                  "--shadow-model", "mlp", "--attacks", "loss,lira_online,top3", "--out", out])
    assert result.exit_code == 0, result.output
    report = load_report(out)["report"]
    rows = [(r["attack"], r["threshold_source"]) for r in report["results"]]
    assert ("loss", "shadow") in rows and ("loss", "oracle") in rows
    assert any(a.startswith("LiRA online") for a, _ in rows)
    assert any(a.startswith("top3") and source == "shadow" for a, source in rows)
    assert report["num_shadows"] == 4 and 0 < report["shadow_train_accuracy"] <= 1
    assert "training   4 mlp shadows" in result.output and "LiRA online" in result.output


def test_audit_names_the_most_exposed_records_and_runs_rmia_on_a_population(trained, tmp_path):
    import csv

    from sklearn.datasets import load_digits

    digits = load_digits()  # the script's order[600:900] were neither members nor non-members
    free = np.random.default_rng(0).permutation(len(digits.target))[600:900]
    np.savez(tmp_path / "population.npz", x=(digits.data[free] / 16.0).astype("float32"),
             y=digits.target[free])
    out = tmp_path / "exposed"
    result = run(["audit", trained / "saved", *data_args(trained),
                  "--population", tmp_path / "population.npz", "--shadows", "4", "--shadow-epochs", "5",
                  "--shadow-model", "mlp", "--attacks", "loss,lira_online,rmia_online,rmia_offline",
                  "--out", out])
    assert result.exit_code == 0, result.output
    saved = load_report(out)
    attacks = [r["attack"] for r in saved["report"]["results"]]
    assert sum(a.startswith("RMIA") for a in attacks) == 2
    assert saved["meta"]["population"].startswith("300 records")
    with open(out / "exposure.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 600 and [int(r["rank"]) for r in rows] == list(range(1, 601))
    risks = [float(r["risk"]) for r in rows]
    assert risks == sorted(risks, reverse=True) and 0 <= min(risks) and max(risks) <= 1
    assert {r["record"] for r in rows} == {f"members[{i}]" for i in range(300)} | {
        f"non-members[{i}]" for i in range(300)}
    best = saved["meta"]["exposure_ranked_by"]
    assert best in rows[0] and "p_member_lira" in rows[0]
    # risk is the share of non-members the best attack scores below the record
    non_member_scores = np.array([float(r[best]) for r in rows if r["member"] == "False"])
    top = float(rows[0][best])
    share = (np.sum(non_member_scores < top) + 0.5 * np.sum(non_member_scores == top)) / 300
    assert float(rows[0]["risk"]) == pytest.approx(share)
    assert [r["record"] for r in saved["meta"]["most_exposed"]] == [r["record"] for r in rows[:10]]
    assert rows[0]["record"] in (out / "report.md").read_text() and "most exposed" in result.output
    bad = run(["audit", trained / "saved", *data_args(trained), "--population", trained / "members.npz",
               "--out", tmp_path / "b"])
    assert bad.exit_code == 2 and "shares 300 record(s) with the audited members" in bad.stderr


def test_audit_of_a_tfmi_model_directory_uses_its_split(tmp_path):
    model_dir = tmp_path / "m"
    trained = run(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--target-size", "200",
                   "--defense", "l2", "--l2", "1e-4", "--out", model_dir])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "a"
    result = run(["audit", model_dir, "--attacks", "gap,loss", "--out", out])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((model_dir / "tfmi.json").read_text())
    report = load_report(out)["report"]
    assert report["num_members"] == 200
    assert report["train_accuracy"] == pytest.approx(sidecar["metrics"]["train_accuracy"], abs=1e-9)
    assert report["test_accuracy"] == pytest.approx(sidecar["metrics"]["test_accuracy"], abs=1e-9)

    # shadows are trained the way the sidecar says the target was: mlp, 2 epochs (not digits' cnn), L2 1e-4
    out = tmp_path / "with_shadows"
    result = run(["audit", model_dir, "--attacks", "loss", "--shadows", "2", "--out", out])
    assert result.exit_code == 0, result.output
    assert "2 mlp shadows with defense l2" in result.output and "(2 epochs)" in result.output
    meta = load_report(out)["meta"]
    assert meta["shadow_model"] == "mlp" and meta["shadow_defense"] == {"name": "l2", "l2": 1e-4}
    out = tmp_path / "undefended_shadows"
    result = run(["audit", model_dir, "--attacks", "loss", "--shadows", "2", "--shadow-defense", "none",
                  "--out", out])
    assert result.exit_code == 0, result.output
    assert load_report(out)["meta"]["shadow_defense"] == {"name": "none"}


def test_keras_files_audit_and_probabilities_match_logits(trained, saved_audit, tmp_path):
    results = load_report(saved_audit[0])["report"]["results"]
    logits = {(r["attack"], r["threshold_source"]): r for r in results}
    for name, kind in (("model.keras", "logits"), ("probs.keras", "probabilities")):
        out = tmp_path / name
        result = run(["audit", trained / name, *data_args(trained), "--out", out])
        assert result.exit_code == 0, result.output
        saved = load_report(out)
        assert saved["report"]["output_kind"] == kind and saved["meta"]["format"] == "keras"
        for r in saved["report"]["results"]:
            if r["attack"] in ("gap", "loss", "confidence"):
                same = logits[(r["attack"], r["threshold_source"])]
                assert r["auc"] == pytest.approx(same["auc"], abs=2e-3), r["attack"]


@pytest.fixture
def bad_inputs(trained, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "empty_dir").mkdir()
    np.savez(tmp_path / "wide.npz", x=np.zeros((20, 65), np.float32), y=np.arange(20) % 10)
    np.savez(tmp_path / "labels.npz", x=np.zeros((20, 64), np.float32), y=np.arange(20) % 12)
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/notes.txt", "--members", "{m}", "--non-members", "{n}"], "is not a model"),
        (["{tmp}/empty_dir", "--members", "{m}", "--non-members", "{n}"], "not a SavedModel"),
        (["{saved}", "--members", "{m}", "--non-members", "{tmp}/wide.npz"], r"\(64,\).*\(65,\)"),
        (["{saved}", "--members", "{m}", "--non-members", "{tmp}/labels.npz"],
         "labels go up to 11 but the model outputs 10 scores"),
        (["{saved}", "--members", "{m}", "--non-members", "{n}", "--attacks", "loss,nope"],
         "unknown attack 'nope'"),
        (["{saved}", "--members", "{m}", "--non-members", "{n}", "--attacks", "lira_online"],
         "need shadow models"),
        (["{saved}", "--members", "{m}"], "--members and --non-members go together"),
        (["{saved}"], "give --members and --non-members files, or a model directory"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(trained, bad_inputs, args, message):
    out = bad_inputs / "out"
    names = {"tmp": bad_inputs, "saved": trained / "saved", "m": trained / "members.npz",
             "n": trained / "non_members.npz"}
    result = run(["audit", *[a.format(**names) for a in args], "--out", out])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not out.exists()
    assert not [p for p in bad_inputs.iterdir() if p.name.startswith(".out.")]


def test_existing_output_is_refused_then_replaced_with_force(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["audit", trained / "saved", *data_args(trained), "--attacks", "gap", "--out", out]
    for extra in ([], ["--force"]):  # a folder tfmi did not write is never replaced
        refused = run([*args, *extra])
        assert refused.exit_code == 2 and refused.stderr.count("Error:") == 1
        assert "not written by tfmi" in refused.stderr and (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert run(args).exit_code == 0  # an empty folder is no one's work
    refused = run(args)
    assert refused.exit_code == 2 and "already exists" in refused.stderr
    replaced = run([*args, "--force"])
    assert replaced.exit_code == 0, replaced.output
    assert (out / "report.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("config", [
    {"name": "mmd-mixup", "mmd_weight": 20.0, "mmd_bandwidths": (0.5, 2.0), "mixup_alpha": 0.4},
    {"name": "dp-sgd", "noise_multiplier": 0.7, "l2_norm_clip": 2.0},
    {"name": "relaxloss", "relax_alpha": 0.5},
])
def test_recorded_defenses_rebuild_from_the_sidecar(config):
    from cli.audit_command import _recorded_defense
    from tfmi.defenses.config import DefenseConfig

    defense = DefenseConfig(**config)
    record = json.loads(json.dumps({**defense.to_dict(), "accounting": {"epsilon": 3.0}}))  # as stored
    assert _recorded_defense(record) == defense
    assert _recorded_defense({"name": "none"}) is None and _recorded_defense(None) is None


def write_csv(npz, path, label_column):
    data = np.load(npz)
    header = ",".join([*(f"f{i}" for i in range(data["x"].shape[1])), label_column])
    rows = np.column_stack([data["x"], data["y"]])
    formats = ["%.6f"] * data["x"].shape[1] + ["%d"]  # digits features are multiples of 1/16: exact
    np.savetxt(path, rows, delimiter=",", header=header, comments="", fmt=formats)
    return path


def test_audit_options_take_effect(trained, saved_audit, tmp_path):
    members = write_csv(trained / "members.npz", tmp_path / "m.csv", "target")
    others = write_csv(trained / "non_members.npz", tmp_path / "n.csv", "target")
    out = tmp_path / "opts"
    result = run(["audit", trained / "model.keras", "--members", members, "--non-members", others,
                  "--label-column", "target", "--outputs", "logits", "--attacks", "loss,top3",
                  "--shadows", "2", "--shadow-model", "mlp", "--shadow-epochs", "2",
                  "--shadow-batch-size", "16", "--shadow-lr", "0.01", "--seed", "5", "--per-class",
                  "--learned-classifier", "logistic", "--bootstrap", "20", "--out", out])
    assert result.exit_code == 0, result.output
    saved = load_report(out)
    results = {(r["attack"], r["threshold_source"]): r for r in saved["report"]["results"]}
    assert set(results) == {("loss per class", "shadow"), ("loss", "oracle"), ("top3 (logistic)", "shadow")}
    assert saved["report"]["output_kind"] == "logits" and saved["report"]["num_members"] == 300
    for r in results.values():
        assert r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1]
    assert saved["meta"]["shadow_training"] == {"model": "mlp", "epochs": 2, "batch_size": 16,
                                                "learning_rate": 0.01, "seed": 5, "dropout": 0.0,
                                                "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0,
                                                "lr_milestones": []}
    # the CSV copy of the data gives the same oracle loss AUC as the .npz audit of the same network
    npz_loss = next(r for r in load_report(saved_audit[0])["report"]["results"]
                    if r["attack"] == "loss" and r["threshold_source"] == "oracle")
    assert results[("loss", "oracle")]["auc"] == pytest.approx(npz_loss["auc"], abs=1e-4)


@pytest.mark.parametrize("extra, message", [
    (["--outputs", "probabilities"], "do not sum to 1"),
    (["--flip"], "flip augmentation needs images"),
])
def test_audit_refuses_contradicting_options(trained, tmp_path, extra, message):
    out = tmp_path / "bad"
    result = run(["audit", trained / "saved", *data_args(trained), *extra, "--out", out])
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.count("Error:") == 1 and not out.exists()


def test_audit_signature_option_picks_among_several(trained, tmp_path):
    import keras
    import tensorflow as tf

    model = keras.models.load_model(trained / "model.keras", compile=False)
    spec = tf.TensorSpec((None, 64), tf.float32, name="x")
    logits = tf.function(lambda x: {"scores": model(x)}, input_signature=[spec])
    probs = tf.function(lambda x: {"scores": tf.nn.softmax(model(x))}, input_signature=[spec])
    path = tmp_path / "two"
    tf.saved_model.save(model, str(path), signatures={"logits": logits, "probs": probs})
    result = run(["audit", path, *data_args(trained), "--out", tmp_path / "a"])
    assert result.exit_code == 2 and "--signature" in result.output and "probs" in result.output
    result = run(["audit", path, *data_args(trained), "--signature", "probs", "--out", tmp_path / "b"])
    assert result.exit_code == 0, result.output
    saved = load_report(tmp_path / "b")
    assert saved["meta"]["signature"] == "probs" and saved["report"]["output_kind"] == "probabilities"


def test_audit_function_notes_records_given_as_members_and_non_members():
    import numpy as np

    from tfmi.audit import audit
    from tfmi.data import load_dataset
    from tfmi.models import build_model

    data = load_dataset("digits")
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.x[:200], data.y[:200], epochs=2, verbose=0)
    members, non_members = (data.x[:100], data.y[:100]), (data.x[100:200], data.y[100:200])
    clean = audit(model, members, non_members, attacks="gap")
    assert clean.notes == [] and [r.attack for r in clean.results][0] == "gap"
    # 40 of the 100 non-members are members too: the report says so first, the attack still runs
    mixed = (np.concatenate([data.x[:40], data.x[140:200]]), np.concatenate([data.y[:40], data.y[140:200]]))
    report = audit(model, members, mixed, attacks="gap")
    assert report.notes[0].startswith("40 distinct records (40% of the smaller set) are both members")
    assert report.num_non_members == 100


def test_audit_shadows_are_the_same_here_in_chunks_and_cached(tmp_path):
    """`audit`, `tfmi audit` and their chunked and cached forms train one set of shadows: same pool,
    same logits (deterministic ops), and a store made for one audited model is not used for another."""
    import tensorflow as tf

    from tfmi.audit import audit_shadow_store, train_audit_shadows
    from tfmi.data import load_dataset
    from tfmi.defenses import DefenseConfig
    from tfmi.training import TrainConfig

    tf.config.experimental.enable_op_determinism()
    data = load_dataset("digits")
    members, non_members = np.arange(60, 120), np.arange(0, 60)
    config = TrainConfig("mlp", epochs=2)
    mmd = DefenseConfig("mmd", mmd_weight=2.0)
    here = train_audit_shadows(data, members, non_members, config, num_shadows=2, seed=3, member_accuracy=1.0,
                               defense=mmd)
    assert here.pool.tolist() == list(range(120)) and not here.batched  # the defense makes Keras shadows
    store = audit_shadow_store(tmp_path, data, members, non_members, config,
                               num_shadows=2, seed=3, member_accuracy=1.0, defense=mmd, per_task=1)
    counted = []
    chunked = train_audit_shadows(data, members, non_members, config, num_shadows=2, seed=3,
                                  member_accuracy=1.0, defense=mmd, per_task=1, store=store,
                                  progress=counted.append)
    assert counted[-1] == 2 and sorted(p.name for p in store.folder.iterdir()) == sorted(
        store.path(c).name for c in [(0, 1), (1, 2)])
    np.testing.assert_allclose(chunked.logits(data.x[:120]), here.logits(data.x[:120]), atol=1e-5)
    # the audited model learned nothing: its failed shadows are kept as they are, so the store differs
    with pytest.raises(ValueError, match="another audited model"):
        train_audit_shadows(data, members, non_members, config, num_shadows=2, seed=3, member_accuracy=0.0,
                            defense=mmd, per_task=1, store=store)
