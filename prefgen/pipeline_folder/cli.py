"""`prefgen new`, `prefgen retrain DIR`, `prefgen nightly DIR`: a pipeline folder of one's own, and its two flows.

The flows run with DIR as the working directory, as the folder's deployments do, so every relative path of its
params.yaml (the catalogue, the MLflow store, the campaign) is the folder's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from prefgen.registry.cli import fail

FolderArg = Annotated[Path, typer.Argument(help="The pipeline folder (made by `prefgen new`).")]


def new(folder: Annotated[Path, typer.Argument(help="The folder to write (must not exist, unless --update).")],
        logs: Annotated[Path, typer.Option(help="The raw logs folder: events and the image catalogue (docs/DATA.md).")],
        images: Annotated[Path, typer.Option(help="The folder the catalogue's image paths are relative to.")],
        catalog: Annotated[Path, typer.Option(help="The image catalogue, an images*.jsonl(.gz) file inside --logs.")],
        profile: Annotated[str, typer.Option(help="Model sizes: demo (minutes) or quality (hours).")] = "demo",
        update: Annotated[bool, typer.Option("--update", help="Rewrite the files prefgen new generated in an existing "
                                             "folder; one the user edited is kept, prefgen's version written beside it.")] = False) -> None:
    """Write a pipeline folder on a platform's logs and photos: dvc.yaml, params.yaml, a campaign, prefect.yaml, git and DVC."""
    from prefgen.pipeline_folder.create import PROPOSED, NewFolder, create, update as rewrite
    from prefgen.pipeline_folder.stages import FolderError

    spec = NewFolder(folder, logs, images, catalog, profile)
    try:
        written, kept = rewrite(spec) if update else (create(spec), [])
    except FolderError as err:
        fail(str(err))
    verb = "rewrote" if update else "wrote"
    typer.echo(f"{verb} {', '.join(written) or 'nothing (every generated file is up to date)'} in {folder}", err=True)
    for name in kept:
        typer.echo(f"kept {name}: you edited it; prefgen's version is beside it as {name}{PROPOSED}: merge what you need "
                   "into yours and delete it", err=True)
    if not update:
        typer.echo(f"next: prefgen retrain {folder}; then, from {folder}: prefgen bundles, prefgen promote --bundle 1 "
                   f"--reason ...; prefgen nightly {folder}", err=True)


def _enter(folder: Path) -> None:
    if not (folder / "dvc.yaml").is_file() or not (folder / "params.yaml").is_file():
        fail(f"{folder} is no pipeline folder (no dvc.yaml and params.yaml): make one with `prefgen new`")
    os.chdir(folder)


def retrain(folder: FolderArg) -> None:
    """Run the folder's retrain flow: the code fingerprint refreshed, every stale stage, the bundle's registration."""
    _enter(folder)
    from flows import folder as folder_flow

    folder_flow.main(".")


def nightly(folder: FolderArg,
            campaign: Annotated[Path | None, typer.Option(help="Campaign spec (default: the folder's params nightly.campaign).")] = None,
            night: Annotated[str | None, typer.Option(help="The night's folder name (default: today).")] = None) -> None:
    """Run the folder's nightly flow: the champion's image sets for the campaign, and their gallery."""
    campaign = campaign.resolve() if campaign is not None else None  # given from here, read from inside the folder
    _enter(folder)
    from flows import nightly as nightly_flow, params_or_exit

    params_or_exit(".")
    nightly_flow.report(nightly_flow.nightly(".", str(campaign) if campaign else None, night))


def add_commands(app: typer.Typer) -> None:
    for command in (new, retrain, nightly):
        app.command()(command)
