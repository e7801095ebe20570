"""`--preset paper`: Li, Li & Ribeiro's own training recipe for the MMD (+ mixup) defense, per dataset.

Every value comes from the authors' code, their later MIST repository (which reruns MMD and MMD +
mixup as a baseline with the settings below) unless a note says otherwise:

* ``exp.sh`` of github.com/colaalex111/MIST, the block "## location 30 or 50 epoch" and the "# MMD"
  / "# mixup MMD" lines: lambda (``--mmd_loss_lambda``), mixup on/off, learning rate, weight decay
  (``--target_l2_ratio``), batch size, epochs and the learning-rate ``--schedule`` (lr / 10 at each);
* ``exp.py`` ``train_models``: SGD with momentum 0.9 for every dataset; the MMD steps
  (``user.py`` ``update_weights_mmd``) use the target's own SGD instance, separate from the one of
  the cross-entropy steps, and recompute the reference outputs for every MMD batch; their batches
  come from the training partition in the random order ``np.random.choice`` drew it (``exp.py``
  ``overall_train_loader_in_order``, ``shuffle=False``), so each mixes the classes;
* ``model/target_model.py``: Location's tanh 1024-512-256 network (tfmi's ``mlp3``).

Where tfmi's data differ from the authors', the size is stated in the preset's ``notes``: the
authors' Location split has 4,000 members; tfmi's Location30 has 5,010 records, so members and as many
non-members fit only up to 2,505 and the preset keeps tfmi's 1,500.

>>> preset = paper_preset("location30", "mlp3")
>>> preset.defense["name"], preset.defense["mmd_weight"], preset.train["optimizer"], preset.train["epochs"]
('mmd', 6.5, 'sgd', 100)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tfmi.errors import TfmiError

PRESET_NAMES = ("paper",)
_MIST = "github.com/colaalex111/MIST"
#: the MMD-step settings every recipe shares (MIST user.py update_weights_mmd): own SGD, fresh references,
#: and batches of the training partition in its drawn (random) order, classes mixed (exp.py
#: overall_train_loader_in_order over np.random.choice's partition, shuffle=False)
_MMD_STEP = {"mmd_optimizer": "sgd", "reference_refresh": "per_batch", "mmd_batches": "shuffled"}


@dataclass(frozen=True)
class Preset:
    """One recipe: `TrainConfig` and `DefenseConfig` keyword arguments, and where each came from."""

    dataset: str
    model: str
    train: dict[str, Any]
    defense: dict[str, Any]
    source: str
    notes: str = ""
    target_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _sgd(learning_rate: float, epochs: int, milestones: tuple[int, ...] = ()) -> dict[str, Any]:
    return {"optimizer": "sgd", "learning_rate": learning_rate, "momentum": 0.9, "weight_decay": 1e-5,
            "batch_size": 100, "epochs": epochs, "lr_milestones": milestones}


_PAPER: dict[tuple[str, str], Preset] = {
    ("location30", "mlp3"): Preset(
        "location30", "mlp3", _sgd(0.1, 100),
        {"name": "mmd", "mmd_weight": 6.5, **_MMD_STEP},
        f"{_MIST} exp.sh, location MMD line (--mmd_loss_lambda 6.5 --mixup 0 --target_learning_rate 0.1 "
        "--target_l2_ratio 1e-5 --target_batch_size 100 --target_epochs 100 --schedule 300: no drop "
        "within 100 epochs); SGD momentum 0.9 in exp.py; network in model/target_model.py",
        "authors: 4,000 members; tfmi's Location30 (5,010 records) keeps 1,500 members and as many "
        "non-members", target_size=1500),
    ("texas100", "mlp"): Preset(
        "texas100", "mlp", _sgd(0.1, 100),
        {"name": "mmd", "mmd_weight": 500.0, **_MMD_STEP},
        f"{_MIST} exp.sh, texas MMD line (--mmd_loss_lambda 500 --mixup 0, lr 0.1, l2 1e-5, batch 100, "
        "100 epochs, --schedule 300)",
        "authors: 40,000 members and their own texas network; tfmi uses its mlp (1024-512-256-128 tanh)",
        target_size=None),
    ("purchase100", "mlp"): Preset(
        "purchase100", "mlp", _sgd(0.1, 100),
        {"name": "mmd", "mmd_weight": 500.0, **_MMD_STEP},
        f"{_MIST} exp.sh, purchase MMD line (--mmd_loss_lambda 500 --mixup 0, lr 0.1, l2 1e-5, batch "
        "100, 100 epochs, --schedule 150)",
        "authors: 40,000 members and their own purchase network; tfmi uses its mlp", target_size=None),
    ("cifar10", "alexnet"): Preset(
        "cifar10", "alexnet", _sgd(0.01, 120, (100,)),
        {"name": "mmd-mixup", "mmd_weight": 0.25, **_MMD_STEP},
        f"{_MIST} exp.sh, '# mixup MMD' cifar10 alexnet line (--mmd_loss_lambda 0.25 --mixup 1, lr "
        "0.01, l2 1e-5, batch 100, 120 epochs, --schedule 100)",
        "authors: 20,000 members", target_size=None),
    ("cifar100", "alexnet"): Preset(
        "cifar100", "alexnet", _sgd(0.01, 120, (100,)),
        {"name": "mmd-mixup", "mmd_weight": 16.0, **_MMD_STEP},
        f"{_MIST} exp.sh, '# mixup MMD' cifar100 alexnet line (--mmd_loss_lambda 16 --mixup 1, lr "
        "0.01, l2 1e-5, batch 100, 120 epochs, --schedule 100). The CODASPY repository "
        "(colaalex111/MMD-mixup-Defense, attack_exp.sh) ran CIFAR-100 with lambda 3, 160 epochs and "
        "lr / 10 at 80 and 120 instead",
        "authors: 20,000 members", target_size=None),
}

#: the model each dataset's paper recipe uses when none is named
PAPER_DEFAULT_MODEL = {dataset: model for dataset, model in _PAPER}


def paper_preset(dataset: str, model: str | None = None) -> Preset:
    """The authors' recipe for ``dataset`` (and ``model``, default the one they used on it).

    Raises `TfmiError` for a dataset or model they did not run the defense on.
    """
    if dataset not in PAPER_DEFAULT_MODEL:
        known = ", ".join(sorted(PAPER_DEFAULT_MODEL))
        raise TfmiError(f"--preset paper has no recipe for dataset {dataset!r}: the authors' settings exist "
                        f"for {known}; drop --preset or set the options yourself")
    model = model or PAPER_DEFAULT_MODEL[dataset]
    if (dataset, model) not in _PAPER:
        raise TfmiError(f"--preset paper has no recipe for model {model!r} on {dataset}: the authors used "
                        f"{PAPER_DEFAULT_MODEL[dataset]}; pass --model {PAPER_DEFAULT_MODEL[dataset]} "
                        "or drop --preset")
    return _PAPER[(dataset, model)]


def paper_presets() -> list[Preset]:
    """Every recipe, for the documentation."""
    return list(_PAPER.values())
