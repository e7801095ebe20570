"""``tfmi datasets``: which datasets exist and where each is found on this machine."""

import click

from cli.options import data_dir_option


@click.command()
@data_dir_option
def datasets(data_dir: str | None) -> None:
    """List the named datasets, whether each is available here, and from where."""
    from tfmi.data import list_datasets

    infos = list_datasets(data_dir)
    width = max(len(info.name) for info in infos)
    for info in infos:
        status = "yes" if info.available else "no "
        click.echo(f"{info.name:<{width}}  {status}  {info.source}")
        click.echo(f"{'':<{width}}       {info.description}")
    click.echo("\nAny .npz (x/y or features/labels) or .csv file path is accepted as --dataset too.")
