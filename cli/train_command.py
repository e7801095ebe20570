"""``tfmi train``: train a target model on the members of a seeded split and save it."""

from __future__ import annotations

import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from cli.options import dataset_options, defense_from_options, defense_options, recipe_options
from tfmi.training_config import TRAIN_DEFAULTS

DEFAULT_MODELS_DIR = Path("saved_models")


@click.command()
@dataset_options
@recipe_options
@click.option("--seed", type=int, default=TRAIN_DEFAULTS["seed"], show_default=True,
              help="Seeds the membership split and training.")
@click.option("--target-size", type=int, default=None,
              help="Members (and as many non-members) [default: per dataset, e.g. 1500 on location30].")
@click.option("--reference-size", type=int, default=None,
              help="Held-out reference records for the MMD defense "
                   "[default: min(target size, half the rest)].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory [default: saved_models/<dataset>-<model>-<defense>-seed<seed>].")
@click.option("--force", is_flag=True,
              help="Replace an existing `tfmi train` output (never a folder tfmi did not write).")
@defense_options
def train(dataset, data_dir, label_column, model_name, epochs, batch_size, learning_rate, preset, optimizer,
          momentum, weight_decay, lr_milestones, seed, target_size, reference_size, out, force, defense,
          **defense_values) -> None:
    """Train a target model on its members and save it (SavedModel, .keras, split, JSON sidecar).

    With --defense, the model is trained with a membership-inference defense; its parameters are
    recorded in the sidecar (for dp-sgd with the achieved epsilon and delta). --preset paper trains
    with the authors' recipe for the dataset (and, unless --defense is given, their defense
    settings); options given explicitly override it.
    """
    # every option is checked before the data is read and long before any training
    from cli.options import given, resolve_recipe
    from tfmi.data import load_dataset, membership_split
    from tfmi.models import check_model_name
    from tfmi.safe_write import check_output_dir, output_lock
    from tfmi.training import TrainConfig, check_batch_size

    recipe = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
              "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay,
              "lr_milestones": lr_milestones}
    model_name, settings, chosen_preset = resolve_recipe(preset, dataset, model_name, recipe)
    if chosen_preset is not None and not given("defense"):
        from cli.options import defense_parameters
        from tfmi.defenses.config import DefenseConfig

        preset_defense = {k: v for k, v in chosen_preset.defense.items() if k != "name"}
        defense_config = DefenseConfig(chosen_preset.defense["name"],
                                       **(preset_defense | defense_parameters(defense_values)))
    else:
        defense_config = defense_from_options(defense, defense_values)
    TrainConfig(model_name or "mlp", seed=seed, **settings)
    if out is not None:
        check_output_dir(out, "train", force=force)
    data = load_dataset(dataset, data_dir, label_column=label_column)
    model_name = check_model_name(model_name or data.default_model)
    config = TrainConfig(model_name, seed=seed, **settings)
    epochs, batch_size, learning_rate = config.epochs, config.batch_size, config.learning_rate
    if target_size is None and chosen_preset is not None and chosen_preset.target_size is not None:
        target_size = chosen_preset.target_size
    target_size = data.default_target_size if target_size is None else target_size
    split = membership_split(data.y, target_size, reference_size, seed=seed)
    check_batch_size(batch_size, len(split.members))
    default_out = DEFAULT_MODELS_DIR / f"{data.name}-{model_name}-{defense_config.name}-seed{seed}"
    out = check_output_dir(out or default_out, "train", force=force)
    with output_lock(out):
        check_output_dir(out, "train", force=force)  # again: another run may have finished meanwhile
        _train_and_save(data, split, config, defense_config, label_column, dataset, out, force)


def _train_and_save(data, split, config, defense_config, label_column, dataset, out, force) -> None:
    from tfmi.artifacts import write_model_dir
    from tfmi.environment import library_versions
    from tfmi.training import train_target

    model_name, seed = config.model, config.seed
    epochs, batch_size, learning_rate = config.epochs, config.batch_size, config.learning_rate

    sizes = split.sizes()
    click.echo(f"dataset  {data.name} from {data.source}: {len(data)} records, "
               f"input {data.input_shape}, {data.num_classes} classes")
    click.echo(f"split    seed {seed}: {sizes['members']} members, {sizes['non_members']} non-members, "
               f"{sizes['reference']} reference, {sizes['shadow_pool']} shadow pool")
    milestones = ", ".join(map(str, config.lr_milestones))
    schedule = f", lr / 10 at epochs {milestones}" if milestones else ""
    sgd = f" momentum {config.momentum:g}" if config.optimizer == "sgd" else ""
    decay = f", weight decay {config.weight_decay:g}" if config.weight_decay else ""
    click.echo(f"model    {model_name}, {epochs} epochs, batch {batch_size}, {config.optimizer} lr "
               f"{learning_rate:g}{sgd}{decay}{schedule}")
    click.echo("defense  " + ", ".join(f"{k} {v}" for k, v in defense_config.to_dict().items()))

    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    trained = train_target(data, split, config, defense_config, verbose=1 if sys.stdout.isatty() else 2)
    sidecar = {
        "tfmi_version": library_versions()["tfmi"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["tfmi", *sys.argv[1:]]) if Path(sys.argv[0]).name == "tfmi" else None,
        "options": click.get_current_context().params | {"out": str(out), "model_name": model_name},
        "dataset": {
            "name": data.name, "source": data.source, "records": len(data),
            "input_shape": list(data.input_shape), "num_classes": data.num_classes,
            "label_column": label_column if dataset.endswith(".csv") else None,
        },
        "model": {"name": model_name, "outputs": "logits"},
        "training": config.to_dict(),
        "defense": trained.defense,
        "split": {"seed": split.seed, "file": "split.npz", "sizes": sizes},
        "metrics": {
            "train_accuracy": trained.train_accuracy,
            "test_accuracy": trained.test_accuracy,
            "generalization_gap": trained.generalization_gap,
            "evaluated_on": "train = members, test = non-members",
        },
        "history": trained.history,
        "versions": library_versions(),
    }
    write_model_dir(out, trained.model, split, sidecar, force=force)
    click.echo(f"accuracy train {trained.train_accuracy:.4f}  test {trained.test_accuracy:.4f}  "
               f"gap {trained.generalization_gap:.4f}")
    accounting = trained.defense.get("accounting")
    if accounting:
        click.echo(f"privacy  epsilon {accounting['epsilon']:.3g} at delta {accounting['delta']:.3g} "
                   f"(noise multiplier {accounting['noise_multiplier']:.4g}, {accounting['accountant']})")
    click.echo(f"saved    {out}/ (saved_model/, model.keras, split.npz, tfmi.json)")
