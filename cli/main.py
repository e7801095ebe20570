"""Entry point of the ``tfmi`` command: the click group and its error handling."""

from __future__ import annotations

import os

import click

from tfmi import __version__
from tfmi.errors import TfmiError

# TensorFlow's C++ start-up chatter (CUDA plug-in registration on CPU-only machines, logged as errors)
# hides the output users came for; set before TF is imported. Failures still surface as exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class UserError(click.ClickException):
    """Bad input: printed as one ``Error: ...`` line, exit code 2."""

    exit_code = 2


class TfmiGroup(click.Group):
    """Turns every `TfmiError` raised by a command into a `UserError` (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TfmiError as exc:
            raise UserError(str(exc)) from None


@click.group(cls=TfmiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tfmi")
def cli() -> None:
    """Membership inference attacks and defenses for Keras/TensorFlow classifiers."""


def _register() -> None:
    from cli.audit_command import audit
    from cli.benchmark_command import benchmark
    from cli.compare_command import compare
    from cli.datasets_command import datasets
    from cli.train_command import train

    cli.add_command(train)
    cli.add_command(datasets)
    cli.add_command(audit)
    cli.add_command(benchmark)
    cli.add_command(compare)


_register()


def main() -> None:
    cli(prog_name="tfmi")
