"""Training-time defenses against membership inference, each usable from ``model.fit``."""
