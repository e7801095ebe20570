"""Membership inference attacks: signals, shadow models and the metrics that score them.

- `run_attacks`: every attack on one target, from one `ShadowSet` (`train_shadows`);
- `ThresholdAttack` (gap, loss, confidence, true-class confidence, entropy, modified entropy),
  `ShokriAttack`, `Top3Attack`, `LiRA`, `RMIA`: scikit-learn style (`fit` on shadow data, then
  `score_samples`/`evaluate` on the target's);
- `AttackResult`/`evaluate_scores`: accuracy, advantage, AUC, TPR at low FPR, ROC;
- `signals_for`/`compute_signals`: the per-example signals every attack starts from.

Names load lazily, so importing ``tfmi.attacks`` does not import TensorFlow.

>>> from tfmi import attacks
>>> attacks.evaluate_scores([0.9, 0.8], [0.1, 0.85], attack="demo").auc
0.75
"""

import importlib
from typing import Any

_LAZY = {
    "run_attacks": "tfmi.attacks.suite",
    "parse_attacks": "tfmi.attacks.suite",
    "shadow_pool": "tfmi.attacks.suite",
    "AttackReport": "tfmi.attacks.suite",
    "ATTACK_NAMES": "tfmi.attacks.suite",
    "train_shadows": "tfmi.attacks.shadow",
    "ShadowSet": "tfmi.attacks.shadow",
    "ThresholdAttack": "tfmi.attacks.threshold",
    "ShokriAttack": "tfmi.attacks.learned",
    "Top3Attack": "tfmi.attacks.learned",
    "LiRA": "tfmi.attacks.lira",
    "RMIA": "tfmi.attacks.rmia",
    "AttackResult": "tfmi.attacks.metrics",
    "evaluate_scores": "tfmi.attacks.metrics",
    "signals_for": "tfmi.attacks.signals",
    "compute_signals": "tfmi.attacks.signals",
    "Signals": "tfmi.attacks.signals",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfmi.attacks' has no attribute {name!r}")
