"""Membership inference attacks: signals, shadow models and the metrics that score them."""
