"""Options shared by several commands."""

import click

from tfmi.data.download import DATA_DIR_ENV

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    envvar=DATA_DIR_ENV,
    help=f"Folder holding dataset files (archives, .npz, JPEG tarballs). Env: {DATA_DIR_ENV}.",
)
