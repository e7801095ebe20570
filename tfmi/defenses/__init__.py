"""Training-time defenses against membership inference, each usable from ``model.fit``.

- `MMDMixupModel`: the MMD set regularizer with mixup (Li, Li & Ribeiro 2021), either alone;
- `AdvRegModel`: adversarial regularization (Nasr et al. 2018);
- `RelaxLossModel`: RelaxLoss (Chen et al. 2022);
- `make_dp_model`: DP-SGD (tensorflow-privacy on Keras 2, `NativeDPModel` on Keras 3), with the
  (epsilon, delta) it spends;
- `DefenseConfig`: any of these, or L2, dropout, label smoothing, early stopping, by name, for
  `tfmi.training.train_target` and ``tfmi train --defense``.

Classes load lazily, so ``tfmi.defenses.DefenseConfig`` does not import TensorFlow.
"""

import importlib
from typing import Any

from tfmi.defenses.config import DEFENSE_NAMES, DefenseConfig

_LAZY = {
    "MMDMixupModel": "tfmi.defenses.mmd_mixup",
    "AdvRegModel": "tfmi.defenses.advreg",
    "RelaxLossModel": "tfmi.defenses.relaxloss",
    "DPSGDConfig": "tfmi.defenses.dp_sgd",
    "make_dp_model": "tfmi.defenses.dp_sgd",
    "NativeDPModel": "tfmi.defenses.dp_native",
    "DefendedModel": "tfmi.defenses.base",
    "mmd2": "tfmi.defenses.mmd",
}
__all__ = ["DEFENSE_NAMES", "DefenseConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfmi.defenses' has no attribute {name!r}")
