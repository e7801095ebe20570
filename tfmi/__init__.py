"""tfmi: membership inference attacks and defenses for Keras/TensorFlow classifiers.

Importing ``tfmi`` is cheap: TensorFlow is loaded only by the submodules that need it
(``tfmi.models``, ``tfmi.training``, ...).

>>> import tfmi
>>> data = tfmi.data.load_dataset("digits")
>>> data.x.shape, data.num_classes
((1797, 8, 8, 1), 10)
"""

from __future__ import annotations

import importlib
from typing import Any

from tfmi.errors import TfmiError

__version__ = "0.1.0"
_LAZY_SUBMODULES = (
    "data", "models", "training", "defenses", "attacks", "audit", "callbacks", "benchmark",
    "model_loading", "report", "plots", "artifacts", "environment",
)
__all__ = ["TfmiError", "__version__", *_LAZY_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"tfmi.{name}")
    raise AttributeError(f"module 'tfmi' has no attribute {name!r}")
