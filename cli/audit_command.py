"""``tfmi audit``: run the membership inference attacks on a trained model and write a report."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import numpy as np

from cli.options import MODEL_LIST, data_dir_option, executor_from_options, executor_options
from tfmi.attacks.names import ATTACK_LIST
from tfmi.errors import TfmiError
from tfmi.training_config import TRAIN_DEFAULTS

DEFAULT_AUDITS_DIR = Path("audits")
NO_DATA_MESSAGE = "give --members and --non-members files, or a model directory written by `tfmi train`"


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--signature", default=None, metavar="NAME",
              help="SavedModel signature to call [default: serving_default, or the only one].")
@click.option("--members", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Records the model was trained on (.npz with x/y, or .csv with a header).")
@click.option("--non-members", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Records the model never saw, same format. Without --members/--non-members MODEL "
                   "must be a `tfmi train` directory: its dataset and recorded split are used.")
@click.option("--population", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Records the model never trained on that an attacker may hold (same format), for "
                   "RMIA's comparisons; never the non-members. For a `tfmi train` directory its split's "
                   "shadow pool is used. Without one, RMIA is skipped.")
@click.option("--label-column", default="label", show_default=True, help="Label column of .csv files.")
@data_dir_option
@click.option("--outputs", type=click.Choice(["auto", "logits", "probabilities"]), default="auto",
              show_default=True,
              help="What the model returns; auto reads a Keras model's last activation, else checks "
                   "whether rows are distributions.")
@click.option("--attacks", default="all", show_default=True,
              help=f"Comma list of attacks or groups ({ATTACK_LIST}), or names such as loss,lira_online.")
@click.option("--shadows", "num_shadows", type=click.IntRange(min=0), default=0, show_default=True,
              help="Shadow models to train (0: none; only the gap attack and oracle upper bounds run). "
                   "Shadows train on random halves of all audited records, members and non-members "
                   "(the online setting), so LiRA online can run.")
@click.option("--shadow-model", default=None,
              help=f"Zoo model for the shadows: {MODEL_LIST} [default: for a `tfmi "
                   "train` directory its model, else mlp for flat features, cnn for images].")
@click.option("--shadow-epochs", type=int, default=None,
              help=f"[default: a `tfmi train` directory's epochs, else {TRAIN_DEFAULTS['epochs']}].")
@click.option("--shadow-batch-size", type=int, default=None,
              help=f"[default: as recorded, else {TRAIN_DEFAULTS['batch_size']}].")
@click.option("--shadow-lr", type=float, default=None,
              help="Shadows' learning rate "
                   f"[default: as recorded, else {TRAIN_DEFAULTS['learning_rate']:g}].")
@click.option("--shadows-per-task", type=click.IntRange(min=1), default=None,
              help="Train the shadows in chunks of this many, each one unit of --executor (e.g. 1 or 2 "
                   "per Ray task) [default: all in one piece]. Batched (undefended mlp/cnn) shadows "
                   "depend on the chunking; the executor does not change them.")
@click.option("--shadow-defense", type=click.Choice(["recorded", "none"]), default="recorded",
              show_default=True,
              help="For a `tfmi train` directory: train the shadows with the target's recorded defense "
                   "(recorded), as tfmi benchmark does, or undefended (none).")
@click.option("--per-class", is_flag=True, help="Calibrate threshold attacks per class.")
@click.option("--learned-classifier", type=click.Choice(["mlp", "logistic"]), default="mlp",
              show_default=True, help="Attack classifier of the shokri and top3 attacks.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=0, show_default=True,
              help="Bootstrap resamples for confidence intervals (0: none).")
@click.option("--flip", is_flag=True, help="Add horizontally flipped images as a second LiRA query.")
@click.option("--seed", type=int, default=TRAIN_DEFAULTS["seed"], show_default=True,
              help="Seeds the shadows and attack models.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory [default: audits/<model name>].")
@click.option("--force", is_flag=True,
              help="Replace an existing `tfmi audit` output (never a folder tfmi did not write).")
@click.option("--unsafe-load", is_flag=True,
              help="DANGEROUS: skip the checks that stop a model file from running code on this machine "
                   "(Lambda layers, classes from other modules, SavedModel ops that touch files, network or "
                   "Python). Only for files you trust as you trust a script; recorded in the report.")
@executor_options
def audit(model, signature, members, non_members, population, label_column, data_dir, outputs, attacks,
          num_shadows, shadow_model, shadow_epochs, shadow_batch_size, shadow_lr, shadows_per_task,
          shadow_defense, per_class, learned_classifier, bootstrap, flip, seed, out, force, unsafe_load,
          **executor_values) -> None:
    """Audit MODEL for membership leakage and write a report (report.json, report.md, exposure.csv, plots).

    MODEL is a SavedModel directory, a `tfmi train` model directory, or a .keras / .h5 file. The
    records come from --members and --non-members, or, for a `tfmi train` directory, from its
    dataset and recorded split. Oracle rows in the report are upper bounds: their thresholds are
    chosen with the true membership labels.
    """
    from tfmi.attacks.suite import SHADOW_ONLY_ATTACKS, parse_attacks
    from tfmi.safe_write import check_output_dir, output_lock
    from tfmi.training import TrainConfig

    # every option is checked before the model is read and long before any shadow training
    requested = parse_attacks(attacks)
    explicit = attacks.strip() != "all"
    if num_shadows == 0 and explicit:
        missing = [a for a in requested if a in SHADOW_ONLY_ATTACKS]
        if missing:
            raise TfmiError(f"{', '.join(missing)} need shadow models: pass --shadows K (e.g. --shadows 16)")
    if num_shadows == 1 and "lira_online" in requested and explicit:
        raise TfmiError("lira_online needs at least 2 shadows (IN and OUT models for each record): "
                        "pass --shadows 2 or more")
    if (members is None) != (non_members is None):
        raise TfmiError(f"--members and --non-members go together: {NO_DATA_MESSAGE}")
    if population is not None and members is None:
        raise TfmiError("--population goes with --members and --non-members; a `tfmi train` directory "
                        "uses its split's shadow pool")
    executor_config, shard = executor_from_options(executor_values)
    chunked = executor_config.name != "local" or shadows_per_task is not None or shard is not None
    if chunked and num_shadows == 0:
        raise TfmiError("--executor ray, --shadows-per-task and --shard run shadow training: pass "
                        "--shadows K too")
    if shard is not None and force:
        raise TfmiError("--force with --shard would discard the other shards' chunks: run the shards into a "
                        "new --out")
    if executor_config.name == "ray":
        from tfmi.executors import check_ray_installed

        check_ray_installed()
    given = {k: v for k, v in (("epochs", shadow_epochs), ("batch_size", shadow_batch_size),
                               ("learning_rate", shadow_lr)) if v is not None}
    TrainConfig(shadow_model or "mlp", seed=seed, **given)  # shadow options, checked even without shadows
    if shadow_model is not None:
        from tfmi.models import check_model_name

        check_model_name(shadow_model)
    out = Path(out) if out is not None else DEFAULT_AUDITS_DIR / (model.stem or "model")
    from tfmi.shadow_chunks import CHUNKS_DIR

    check_output_dir(out, "audit", force=force, resumable=[CHUNKS_DIR])
    with output_lock(out, shared=shard is not None):
        # again: another run may have finished meanwhile
        check_output_dir(out, "audit", force=force, resumable=[CHUNKS_DIR])
        _audit(model, signature, members, non_members, population, label_column, data_dir, outputs,
               attacks, num_shadows, shadow_model, given, shadow_defense, per_class, learned_classifier,
               bootstrap, flip, seed, out, force, unsafe_load, executor_config if chunked else None,
               shadows_per_task, shard)


def _audit(model, signature, members, non_members, population, label_column, data_dir, outputs, attacks,
           num_shadows, shadow_model, given, shadow_defense, per_class, learned_classifier, bootstrap, flip,
           seed, out, force, unsafe_load, executor_config, shadows_per_task, shard) -> None:
    from tfmi.model_loading import load_model
    from tfmi.models import check_model_name
    from tfmi.training import TrainConfig

    if unsafe_load:
        click.echo("Warning: --unsafe-load: the model file's own code may run on this machine", err=True)
    loaded = load_model(model, signature, unsafe_load=unsafe_load)
    if members is not None:
        data, member_idx, non_member_idx, population_idx, source = _data_from_files(
            loaded, members, non_members, population, label_column)
        sidecar_outputs, recorded = None, {}
        record_ids = [f"members[{i}]" for i in range(len(member_idx))]
        record_ids += [f"non-members[{i}]" for i in range(len(non_member_idx))]
    else:
        data, member_idx, non_member_idx, population_idx, source, sidecar_outputs, recorded = \
            _data_from_model_dir(model, data_dir)
        record_ids = [f"record {i}" for i in np.concatenate([member_idx, non_member_idx])]
    _check_input_shape(loaded, data.input_shape)
    if outputs == "auto" and sidecar_outputs in ("logits", "probabilities"):
        outputs = sidecar_outputs

    shadow_config = None
    if num_shadows:
        # shadows are trained the way the target was, where its sidecar says how; else TrainConfig's defaults
        settings = {k: (tuple(v) if k == "lr_milestones" else v) for k, v in recorded.items()
                    if k not in ("model", "defense") and v is not None}
        shadow_config = TrainConfig(
            check_model_name(shadow_model or recorded.get("model") or data.default_model),
            **(settings | given), seed=seed)
        from tfmi.training import check_batch_size

        check_batch_size(shadow_config.batch_size, (len(member_idx) + len(non_member_idx)) // 2,
                         option="--shadow-batch-size")
    shadow_epochs = shadow_config.epochs if shadow_config else None
    source_of_population = population if population is not None else "the split's shadow pool"
    defense = recorded.get("defense") if shadow_defense == "recorded" else None
    from tfmi.audit import overlap_warning

    warning = overlap_warning(data, member_idx, non_member_idx)
    warnings = [warning] if warning else []
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)

    target = loaded.keras_model if loaded.keras_model is not None else loaded.predict
    from tfmi.attacks.signals import compute_signals, model_outputs

    x_eval = data.x[np.concatenate([member_idx, non_member_idx])]
    y_eval = data.y[np.concatenate([member_idx, non_member_idx])]
    target_outputs = model_outputs(target, x_eval, outputs=outputs)
    signals = compute_signals(target_outputs, y_eval)

    click.echo(f"model      {loaded.path} ({loaded.format}), input {loaded.input_shape}, "
               f"{data.num_classes} classes, outputs {target_outputs.kind}")
    click.echo(f"records    {source}: {len(member_idx)} members, {len(non_member_idx)} non-members")
    shadows = None
    from tfmi.audit import audit_shadow_pool, train_audit_shadows

    pool = audit_shadow_pool(member_idx, non_member_idx)
    if shadow_config is not None:
        member_accuracy = float(signals.correct[:len(member_idx)].mean())
        with_defense = f" with defense {defense.name}" if defense is not None else ""
        click.echo(f"training   {num_shadows} {shadow_config.model} shadows{with_defense} on random "
                   f"halves of the {len(pool)} audited records ({shadow_epochs} epochs) ...")
        if executor_config is None:
            shadows = train_audit_shadows(data, member_idx, non_member_idx, shadow_config,
                                          num_shadows=num_shadows, seed=seed, member_accuracy=member_accuracy,
                                          defense=defense)
        else:
            shadows = _train_shadows_in_chunks(executor_config, data, member_idx, non_member_idx,
                                               population_idx, flip, shadow_config, num_shadows, seed,
                                               shadows_per_task, defense, out, shard, member_accuracy)
            if shard is not None:
                return

    from tfmi.attacks.suite import run_attacks

    report = run_attacks(
        target, data, member_idx, non_member_idx, attacks=attacks, shadows=shadows, outputs=outputs,
        per_class=per_class, learned_classifier=learned_classifier, flip=flip, bootstrap=bootstrap,
        seed=seed, population=population_idx)
    exposure = None
    if any(r.threshold_source != "oracle" for r in report.results):
        from tfmi.exposure import exposure_table, most_exposed_lines

        exposure = exposure_table(report, record_ids, y_eval)

    from tfmi.environment import library_versions
    from tfmi.plots import plot_roc, plot_signal_histograms
    from tfmi.report import (
        ATTACK_COLUMNS,
        attack_rows,
        audit_markdown,
        audit_summary_lines,
        format_table,
    )

    params = click.get_current_context().params
    meta = {
        "model": str(model),
        "loaded_from": loaded.path,
        "format": loaded.format,
        "signature": loaded.signature,
        "unsafe_load": loaded.unsafe_load,
        "outputs": report.output_kind,
        "warnings": warnings,
        "data": source,
        "shadow_model": shadow_config.model if shadow_config else None,
        "shadow_training": shadow_config.to_dict() if shadow_config else None,
        "shadow_defense": (defense.to_dict() if defense is not None else {"name": "none"})
        if shadow_config else None,
        "shadow_pool": (f"all {len(pool)} audited records (online)" if shadow_config else None),
        "population": (f"{len(population_idx)} records ({source_of_population})"
                       if population_idx is not None else None),
        "most_exposed": exposure.most_exposed() if exposure else None,
        "exposure_ranked_by": exposure.ranked_by if exposure else None,
        "seed": seed,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()} | {"out": str(out)},
        "command": shlex.join(["tfmi", *sys.argv[1:]]) if Path(sys.argv[0]).name == "tfmi" else None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "tfmi_version": library_versions()["tfmi"],
        "versions": library_versions(),
    }
    lines = audit_summary_lines(report, meta) + (most_exposed_lines(exposure) if exposure else [])
    table = format_table(ATTACK_COLUMNS, attack_rows(report))
    is_member = np.r_[np.ones(len(member_idx), bool), np.zeros(len(non_member_idx), bool)]
    sig_m, sig_n = signals.select(is_member), signals.select(~is_member)
    plots = {"ROC curves": "roc.png", "Member vs non-member signals": "signals.png"}
    name = Path(loaded.path).name

    from tfmi.safe_write import atomic_directory
    from tfmi.shadow_chunks import CHUNKS_DIR

    with atomic_directory(out, "audit", force=force, adopt=[CHUNKS_DIR]) as staging:
        (staging / "report.json").write_text(
            json.dumps({"meta": meta, "report": report.to_dict()}, indent=2) + "\n")
        (staging / "report.md").write_text(audit_markdown(report, meta, plots, exposure))
        if exposure:
            (staging / "exposure.csv").write_text(exposure.to_csv())
        plot_roc(report.results, staging / "roc.png", title=f"Membership inference ROC: {name}")
        plot_signal_histograms(sig_m, sig_n, staging / "signals.png", title=f"Signals of {name}")

    for line in lines[2:]:  # model and records were printed before the attacks ran
        click.echo(line)
    click.echo("")
    click.echo(table)
    click.echo("")
    written = ", ".join(["report.json", "report.md", *(["exposure.csv"] if exposure else []), "roc.png",
                         "signals.png"])
    click.echo(f"saved      {out}/ ({written})")


def _check_input_shape(loaded, shape: tuple[int, ...]) -> None:
    expected = loaded.input_shape
    if expected is None:
        return
    if len(expected) != len(shape) or any(e not in (None, s) for e, s in zip(expected, shape, strict=False)):
        raise TfmiError(f"the model expects examples of shape {tuple(expected)} but the records have shape "
                        f"{tuple(shape)}: audit it on the data it was trained on")


def _data_from_files(loaded, members: Path, non_members: Path, population: Path | None,
                     label_column: str):
    """One Dataset of members then non-members, labels checked against the model's class count.

    Each file may hold any part of the data (one record, one class, no class 0): only together, and
    against the model's output width, must the labels make sense.
    """
    from tfmi.attacks.signals import model_outputs
    from tfmi.audit import combine_members
    from tfmi.data.dataset import check_features
    from tfmi.data.files import read_arrays

    m = read_arrays(members, label_column=label_column)
    n = read_arrays(non_members, label_column=label_column)
    width = loaded.num_outputs
    if width is None:  # a SavedModel whose signature does not say: ask the model
        first = check_features(m[0], f"members ({members})")[:1]
        _check_input_shape(loaded, first.shape[1:])
        width = model_outputs(loaded.predict, first, outputs="logits").num_classes
    data, member_idx, non_member_idx = combine_members(
        m, n, width, names=(f"members ({members})", f"non-members ({non_members})"))
    population_idx = None
    if population is not None:
        from tfmi.audit import append_records

        data, population_idx = append_records(data, read_arrays(population, label_column=label_column),
                                              f"population ({population})")
    return data, member_idx, non_member_idx, population_idx, f"{members} + {non_members}"


def _train_shadows_in_chunks(executor_config, data, member_idx, non_member_idx, population_idx, flip, config,
                             num_shadows, seed, per_task, defense, out, shard, member_accuracy):
    """The shadows in chunks on the chosen executor, cached in ``out`` as they finish, with a progress bar;
    a shard trains its own chunks only, reports, and returns None."""
    from tfmi.attacks.shadow import shadow_chunks
    from tfmi.audit import audit_shadow_store, train_audit_shadows
    from tfmi.executors import LocalExecutor, make_executor

    store = audit_shadow_store(out, data, member_idx, non_member_idx, config, num_shadows=num_shadows,
                               seed=seed, member_accuracy=member_accuracy, defense=defense,
                               population_idx=population_idx, flip=flip, per_task=per_task)
    chunks = shadow_chunks(num_shadows, per_task)
    mine = chunks if shard is None else shard.select(chunks)
    cached = [c for c in chunks if store.has(c)]
    todo = [c for c in mine if c not in cached]
    of_shard = "" if shard is None else f", shard {shard.text()} takes {len(mine)}"
    click.echo(f"chunks     {len(chunks)} x {per_task or num_shadows} shadow(s) ({len(cached)} cached in "
               f"{store.folder}{of_shard}, {len(todo)} to train on {executor_config.name})")
    executor = make_executor(executor_config) if todo else LocalExecutor()  # no Ray to start for nothing
    try:
        with click.progressbar(length=sum(b - a for a, b in mine), label="shadows", file=sys.stderr,
                               show_pos=True) as bar:
            done = [0]

            def progress(count):
                bar.update(count - done[0])
                done[0] = count

            shadows = train_audit_shadows(data, member_idx, non_member_idx, config, num_shadows=num_shadows,
                                          seed=seed, member_accuracy=member_accuracy, defense=defense,
                                          population_idx=population_idx, flip=flip, executor=executor,
                                          per_task=per_task, store=store,
                                          chunks=None if shard is None else mine, progress=progress)
    finally:
        executor.close()
    if shard is not None:
        left = sum(not store.has(c) for c in chunks)
        then = ("run the command without --shard to attack and write the report" if not left
                else f"{left} left for the other shards")
        click.echo(f"shard {shard.text()} done: {len(chunks) - left} of {len(chunks)} chunks cached; {then}")
    return shadows


def _data_from_model_dir(model: Path, data_dir: str | None):
    """The dataset and recorded split of a `tfmi train` model directory."""
    from tfmi.artifacts import SIDECAR_FILE, SPLIT_FILE, read_sidecar
    from tfmi.data import load_dataset
    from tfmi.data.splits import MembershipSplit

    if not (model.is_dir() and (model / SIDECAR_FILE).is_file()):
        raise TfmiError(NO_DATA_MESSAGE)
    sidecar = read_sidecar(model)
    try:
        options = sidecar.get("options") or {}
        dataset = sidecar["dataset"]
        name = options.get("dataset") or dataset["name"]
        split_file = model / (sidecar.get("split") or {}).get("file", SPLIT_FILE)
        label_column = dataset.get("label_column") or options.get("label_column") or "label"
        outputs = (sidecar.get("model") or {}).get("outputs")
        training = sidecar.get("training") or {}
        recorded = {k: training.get(k)
                    for k in ("model", "epochs", "batch_size", "learning_rate", "optimizer", "momentum",
                              "weight_decay", "lr_milestones")}
        recorded["defense"] = _recorded_defense(sidecar.get("defense"))
    except (AttributeError, KeyError, TypeError):
        raise TfmiError(f"{model / SIDECAR_FILE} lacks the dataset record of `tfmi train`: "
                        f"{NO_DATA_MESSAGE}") from None
    data = load_dataset(name, data_dir or options.get("data_dir"), label_column=label_column)
    records = dataset.get("records")
    if records is not None and int(records) != len(data):
        raise TfmiError(f"{model} was trained on {records} records of {name!r} but the dataset found now has "
                        f"{len(data)}: point --data-dir at the data it was trained on")
    split = MembershipSplit.load(split_file, num_records=len(data))
    population = split.shadow_pool if len(split.shadow_pool) else None
    return (data, split.members, split.non_members, population, f"{data.name} (split of {model.name})",
            outputs, recorded)


def _recorded_defense(record):
    """The `DefenseConfig` a `tfmi train` sidecar records (None for no defense)."""
    from dataclasses import fields

    from tfmi.defenses.config import DefenseConfig

    if not isinstance(record, dict) or record.get("name", "none") == "none":
        return None
    names = {f.name for f in fields(DefenseConfig)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in record.items() if k in names}
    return DefenseConfig(**values)
