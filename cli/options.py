"""Options shared by several commands."""

import click

from tfmi.data.download import DATA_DIR_ENV
from tfmi.model_names import MODEL_NAMES

MODEL_LIST = ", ".join(MODEL_NAMES[:-1]) + " or " + MODEL_NAMES[-1]

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    envvar=DATA_DIR_ENV,
    help=f"Folder holding dataset files (archives, .npz, JPEG tarballs). Env: {DATA_DIR_ENV}.",
)


def _defense_option(flag: str, field: str, kind, help_text: str, **kwargs):
    from tfmi.defenses.config import DefenseConfig

    full_help = f"{help_text} [default: {DefenseConfig.default_text(field)}]."
    return click.option(flag, field, type=kind, default=None, help=full_help, **kwargs)


# (flag, DefenseConfig field, type, help); unset options keep DefenseConfig's defaults, which the help
# states from DefenseConfig itself
DEFENSE_OPTIONS = [
    ("--mmd-weight", "mmd_weight", float, "MMD weight lambda (mmd, mmd-mixup)"),
    ("--mmd-schedule", "mmd_schedule", click.Choice(["paper", "joint"]),
     "paper: CE pass then an MMD-only pass per epoch (the authors'); joint: one summed step"),
    ("--mmd-bandwidth", "mmd_bandwidths", float,
     "Gaussian kernel bandwidth; repeat for a sum of kernels"),
    ("--gap-threshold", "gap_threshold", float, "Train/reference accuracy gap that switches MMD on"),
    ("--mmd-optimizer", "mmd_optimizer", click.Choice(["shared", "sgd"]),
     "Optimizer of the paper schedule's MMD steps: the cross-entropy steps' own, or a separate SGD "
     "with momentum 0.9 (the authors')"),
    ("--mmd-learning-rate", "mmd_learning_rate", float, "Learning rate of --mmd-optimizer sgd"),
    ("--reference-refresh", "reference_refresh", click.Choice(["per_pass", "per_batch"]),
     "When the MMD pass computes the reference outputs: once per pass, or for every batch with the "
     "current weights (the authors')"),
    ("--mmd-batches", "mmd_batches", click.Choice(["class_sorted", "shuffled"]),
     "How the MMD pass batches the members: class-sorted (the CODASPY code) or shuffled, classes mixed "
     "(the authors' later MIST code, and --preset paper)"),
    ("--target-gap", "target_gap", float,
     "Adapt lambda after each epoch so the train/reference accuracy gap settles here (never looks at "
     "the non-members; the lambda trajectory is recorded)"),
    ("--mixup-alpha", "mixup_alpha", float, "Mixup Beta(alpha, alpha) (mixup, mmd-mixup)"),
    ("--l2", "l2", float, "Weight decay coefficient (l2)"),
    ("--dropout", "dropout", float, "Dropout rate (dropout)"),
    ("--label-smoothing", "label_smoothing", float, "Label smoothing epsilon (label-smoothing)"),
    ("--patience", "patience", int,
     "Epochs without improvement of the reference-set loss before stopping (early-stopping)"),
    ("--l2-norm-clip", "l2_norm_clip", float, "Per-example gradient clip norm (dp-sgd)"),
    ("--noise-multiplier", "noise_multiplier", float, "Gaussian noise multiplier (dp-sgd)"),
    ("--target-epsilon", "target_epsilon", float,
     "Find the noise multiplier that spends this epsilon (dp-sgd; instead of --noise-multiplier)"),
    ("--delta", "delta", float, "DP delta (dp-sgd)"),
    ("--microbatches", "microbatches", int, "Microbatches per batch (dp-sgd; must divide the batch size)"),
    ("--dp-path", "dp_path", click.Choice(["auto", "fast", "vectorized", "microbatched"]),
     "tensorflow-privacy implementation (dp-sgd; auto: the fastest that supports the model)"),
    ("--adv-weight", "adv_weight", float, "Adversarial regularization weight lambda (advreg)"),
    ("--attack-steps", "attack_steps", int, "Inference-model steps per classifier step (advreg)"),
    ("--relax-alpha", "relax_alpha", float, "Target loss level alpha (relaxloss)"),
]


def defense_parameter_options(command):
    """Add every defense parameter option (not `--defense`) to a click command."""
    for flag, field, kind, help_text in reversed(DEFENSE_OPTIONS):
        extra = {"multiple": True} if field == "mmd_bandwidths" else {}
        command = _defense_option(flag, field, kind, help_text, **extra)(command)
    return command


def defense_options(command):
    """Add `--defense` and every defense parameter to a click command."""
    from tfmi.defenses.config import DEFENSE_NAMES

    return click.option(
        "--defense", default="none", show_default=True,
        help=f"Training-time defense: {', '.join(DEFENSE_NAMES)}.",
    )(defense_parameter_options(command))


def defense_parameters(values: dict) -> dict:
    """Pop the defense parameters the user set from the CLI values (empty multiple options are unset)."""
    chosen = {}
    for _, field, _, _ in DEFENSE_OPTIONS:
        value = values.pop(field, None)
        if value is None or value == ():
            continue
        chosen[field] = tuple(value) if field == "mmd_bandwidths" else value
    return chosen


def defense_from_options(name: str, values: dict):
    """A DefenseConfig from the CLI values that were set."""
    from tfmi.defenses.config import DefenseConfig

    return DefenseConfig(name, **defense_parameters(values))


def _train_default_help(field: str) -> str:
    from tfmi.training_config import TRAIN_DEFAULTS

    value = TRAIN_DEFAULTS[field]
    return f"[default: {value if value != () else 'none'}]"


def _add(command, options):
    for option in reversed(options):
        command = option(command)
    return command


def dataset_options(command):
    """Add the data and model options shared by `tfmi train` and `tfmi benchmark`."""
    return _add(command, [
        click.option("--dataset", default="digits", show_default=True,
                     help="Dataset name (see `tfmi datasets`) or path to a .npz/.csv file."),
        data_dir_option,
        click.option("--label-column", default="label", show_default=True,
                     help="Label column of a .csv dataset."),
        click.option("--model", "model_name", default=None,
                     help=f"{MODEL_LIST} [default: the dataset's usual model]."),
    ])


def recipe_options(command):
    """Add the training recipe options (and --preset) shared by `tfmi train` and `tfmi benchmark`."""
    from tfmi.presets import PRESET_NAMES
    from tfmi.training_config import OPTIMIZERS, TRAIN_DEFAULTS

    options = [
        click.option("--epochs", type=int, default=TRAIN_DEFAULTS["epochs"], show_default=True),
        click.option("--batch-size", type=int, default=TRAIN_DEFAULTS["batch_size"], show_default=True),
        click.option("--lr", "learning_rate", type=float, default=TRAIN_DEFAULTS["learning_rate"],
                     show_default=True, help="Learning rate of the optimizer below."),
        click.option("--preset", type=click.Choice(PRESET_NAMES), default=None,
                     help="The authors' recipe for the dataset (optimizer, schedule, weight decay, batch, "
                          "epochs, lambda, mixup; see tfmi/presets.py). Options given explicitly win."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
                     help=f"Optimizer {_train_default_help('optimizer')}."),
        click.option("--momentum", type=float, default=None,
                     help=f"SGD momentum {_train_default_help('momentum')}."),
        click.option("--weight-decay", type=float, default=None,
                     help=f"Optimizer weight decay {_train_default_help('weight_decay')}."),
        click.option("--lr-drop-at", "lr_milestones", type=int, multiple=True,
                     help="Epoch at which the learning rate drops 10x; repeat for several "
                          f"{_train_default_help('lr_milestones')}."),
    ]
    return _add(command, options)


def given(name: str) -> bool:
    """Whether the user set option ``name`` (on the command line or through its environment variable)."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def resolve_recipe(preset_name: str | None, dataset: str, model_name: str | None, values: dict):
    """(model, TrainConfig keyword arguments, preset or None) from the recipe options and a preset.

    ``values`` holds epochs, batch_size, learning_rate, optimizer, momentum, weight_decay and
    lr_milestones as the CLI parsed them; a preset fills what the user did not set.
    """
    from tfmi.presets import paper_preset

    preset = paper_preset(dataset, model_name) if preset_name == "paper" else None
    settings = dict(preset.train) if preset else {}
    for name, value in values.items():
        unset = value is None or value == ()
        if (given(name) or name not in settings) and not unset:
            settings[name] = tuple(value) if name == "lr_milestones" else value
    model = model_name or (preset.model if preset else None)
    return model, settings, preset


def executor_options(command=None, *, shards: bool = True):
    """Add where units run (--executor, --ray-address, per-task resources, --max-retries) and, with
    ``shards``, --shard; defaults come from `tfmi.executors.ExecutorConfig`."""
    if command is None:
        return lambda command: executor_options(command, shards=shards)
    from tfmi.executors import EXECUTOR_NAMES, ExecutorConfig

    default = ExecutorConfig()
    options = [
        click.option("--executor", type=click.Choice(EXECUTOR_NAMES), default=default.name, show_default=True,
                     help="Where the units run: in this process, or as Ray tasks (pip install "
                          "'tfmi[ray]'), on the cluster at --ray-address or else on a private one on "
                          "127.0.0.1 with this machine's CPUs."),
        click.option("--ray-address", default=default.address,
                     help="A running Ray cluster to join (as `ray start --head` prints, or auto) "
                          "[default: start a private one on 127.0.0.1]."),
        click.option("--cpus-per-task", type=float, default=default.cpus_per_task, show_default=True,
                     help="CPUs each Ray task asks for."),
        click.option("--gpus-per-task", type=float, default=default.gpus_per_task, show_default=True,
                     help="GPUs each Ray task asks for (fractions share a GPU)."),
        click.option("--max-retries", type=int, default=default.max_retries, show_default=True,
                     help="Times Ray reruns a task whose worker died."),
    ] + ([] if not shards else [
        click.option("--shard", default=None, metavar="I/N",
                     help="Run only units I, I+N, I+2N, ... (0 <= I < N) into a shared --out, as one "
                          "task of a job array (Slurm, Kubernetes); then run the command without --shard "
                          "to assemble the results from the cache."),
    ])
    for option in reversed(options):
        command = option(command)
    return command


def executor_from_options(values: dict):
    """(ExecutorConfig, Shard or None) from the CLI values of `executor_options`, popped from ``values``."""
    from tfmi.executors import ExecutorConfig, Shard

    shard = values.pop("shard", None)
    config = ExecutorConfig(values.pop("executor"), address=values.pop("ray_address"),
                            cpus_per_task=values.pop("cpus_per_task"),
                            gpus_per_task=values.pop("gpus_per_task"), max_retries=values.pop("max_retries"))
    return config, (Shard.parse(shard) if shard is not None else None)
