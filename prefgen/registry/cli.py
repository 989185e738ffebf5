"""The registry's commands on `prefgen`: register, bundles, promote, rollback, generate, lineage, regenerate.

Each reads params.yaml for the tracking store and the `registry` section; MLFLOW_TRACKING_URI
points them at a server instead. Results go to stdout, messages to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from prefgen.config import section_config, tracking_config
from prefgen.params import DEFAULT_PARAMS, ConfigError, load_params

ParamsOpt = Annotated[Path, typer.Option(help="params.yaml (tracking store and the registry section).")]
ManifestOpt = Annotated[Path | None, typer.Option(help="A manifest.parquet to look the image up in first.")]
DEVICE_HELP = "Where the bundle's models run: auto (a GPU where torch sees one), cpu, cuda or cuda:N."


def fail(message: str) -> None:
    """Print `error: message` to stderr and exit 2 (every prefgen command fails this way)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _load(params: Path) -> tuple[dict[str, Any], Any]:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per manifest read drowns the answer
    try:
        loaded = load_params(params)
        return loaded, section_config(loaded, "registry")
    except ConfigError as err:
        fail(str(err))
    raise AssertionError("unreachable")


def _client(loaded: dict[str, Any]):
    from prefgen import tracking

    tracking.configure(tracking_config(loaded), Path.cwd())
    return tracking.mlflow.MlflowClient()


def _registry(loaded: dict[str, Any], name: str):
    """The store's client; None when no bundle was ever registered under `name` (MLflow answers with a traceback)."""
    from mlflow.exceptions import MlflowException

    from prefgen import tracking

    uri = tracking.tracking_uri(tracking_config(loaded), Path.cwd())
    local_db = uri.removeprefix("sqlite:///")
    if local_db != uri and not Path(local_db).exists():  # no store yet: asking would create an empty one
        return None
    client = _client(loaded)
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    return client


def _no_bundle_yet(name: str) -> str:
    return f"no bundle registered yet: the registry has no model {name!r} (the retrain flow or `prefgen register` makes one)"


def _errors():
    from mlflow.exceptions import MlflowException

    from prefgen.pipeline import StageError
    from prefgen.registry.bundle import BundleError
    from prefgen.registry.store import RegistryError
    from prefgen.serving.image_sets import RequestError

    # MlflowException: e.g. a version number the registry does not hold; its message names it in one line.
    return RegistryError, BundleError, RequestError, StageError, FileNotFoundError, MlflowException


def _log(line: str) -> None:
    typer.echo(line, err=True)


def _check_device(device: str) -> None:
    """Refuse a device this machine does not have before anything is downloaded."""
    from prefgen.serving.devices import resolve_device

    try:
        resolve_device(device)
    except ConfigError as err:
        fail(str(err))


def register(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Bundle the trained models, register a new version unless identical, and apply the champion gate."""
    from prefgen.registry import register as step
    from prefgen.rescore import rescore_bundle

    loaded, cfg = _load(params)
    try:
        result = step.run(cfg, loaded, Path.cwd(), log=_log, rescore=rescore_bundle)
    except _errors() as err:
        fail(str(err))
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")


def bundles(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Every bundle version, newest first: aliases, gate decision, gate metrics; then champion history."""
    from prefgen.registry import store

    loaded, cfg = _load(params)
    client = _registry(loaded, cfg.model_name)
    if client is None:
        _log(_no_bundle_yet(cfg.model_name))
        return
    for row in store.versions(client, cfg.model_name):
        metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted(row.metrics.items()))
        typer.echo(f"v{row.version:<4} {','.join(row.aliases) or '-':<20} {row.gate or '-':<8} {row.digest}  {row.created}  {metrics}")
    for entry in store.history(client, cfg.model_name):
        typer.echo(f"  {entry['at']}  {entry['action']:<8} v{entry['previous'] or '-'} -> v{entry['version']}  by {entry['by']}: {entry['reason']}")


def promote(bundle: Annotated[str, typer.Option(help="Version number (or alias) to make champion.")],
            reason: Annotated[str, typer.Option(help="Why: recorded with who and when.")],
            params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Make a bundle version champion by hand (the nightly generation then uses it)."""
    from prefgen.registry import store

    loaded, cfg = _load(params)
    client = _registry(loaded, cfg.model_name)
    if client is None:
        fail(_no_bundle_yet(cfg.model_name))
    try:
        entry = store.promote(client, cfg.model_name, bundle, reason)
    except _errors() as err:
        fail(str(err))
    _log(f"champion: v{entry['previous'] or '-'} -> v{entry['version']} (by {entry['by']} at {entry['at']})")
    sys.stdout.write(json.dumps(entry, sort_keys=True) + "\n")


def rollback(reason: Annotated[str, typer.Option(help="Why (default: 'rollback from version N').")] = "",
             params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Put the previous champion back in service."""
    from prefgen.registry import store

    loaded, cfg = _load(params)
    client = _registry(loaded, cfg.model_name)
    if client is None:
        fail(_no_bundle_yet(cfg.model_name))
    try:
        entry = store.rollback(client, cfg.model_name, reason)
    except _errors() as err:
        fail(str(err))
    _log(f"champion: v{entry['previous']} -> v{entry['version']} (rolled back by {entry['by']} at {entry['at']})")
    sys.stdout.write(json.dumps(entry, sort_keys=True) + "\n")


def generate(segment: Annotated[list[str], typer.Option(help="Segment id, e.g. grp:g7 (repeat for more).")],
             prompt: Annotated[list[str], typer.Option(help="Prompt (repeat for more).")],
             out: Annotated[Path, typer.Option(help="Output folder: images/<sha256>.png and manifest.parquet.")],
             bundle: Annotated[str, typer.Option(help="Bundle version number or alias.")] = "champion",
             n: Annotated[int, typer.Option(help="Images per segment and prompt (one batch).")] = 4,
             seed: Annotated[int, typer.Option(help="Seed of the first image; image k uses seed + k.")] = 0,
             device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
             params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Images for every segment x prompt from a registered bundle, with the sampler settings of params.yaml."""
    from prefgen.registry import generate as step
    from prefgen.serving.image_sets import BatchRequest

    loaded, cfg = _load(params)
    if n < 1:
        fail("--n must be at least 1")
    _check_device(device)
    try:
        requests = [BatchRequest(s, p, tuple(range(seed, seed + n))) for s in segment for p in prompt]
        result = step.run(tracking_config(loaded), Path.cwd(), cfg.model_name, bundle, requests, out,
                          section_config(loaded, "sampler"), log=_log, device=device)
    except (*_errors(), ValueError) as err:  # ValueError: an unknown segment (the scorer names it), a device not here
        fail(str(err))
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")


def lineage(target: Annotated[str, typer.Argument(help="An image file, or (a prefix of, >= 8 digits) its sha256.")],
            manifest: ManifestOpt = None, json_out: Annotated[bool, typer.Option("--json", help="Print the chain as JSON.")] = False,
            params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """The chain: image -> generation run -> bundle version -> training runs -> params, dvc.lock, git -> raw logs."""
    from prefgen.registry import lineage as chain

    loaded, _ = _load(params)
    try:
        info = chain.chain(tracking_config(loaded), Path.cwd(), target, manifest)
    except _errors() as err:
        fail(str(err))
    typer.echo(json.dumps(info, indent=2, sort_keys=True, default=str) if json_out else chain.format_chain(info))


def regenerate(target: Annotated[str, typer.Argument(help="An image's sha256 (>= 8 digits) or its file.")],
               manifest: ManifestOpt = None,
               out: Annotated[Path | None, typer.Option(help="Also write the regenerated PNG here.")] = None,
               device: Annotated[str | None, typer.Option(help=DEVICE_HELP + " Default: the device class the image "
                                                          "was made on, where this machine has one.")] = None,
               tolerance: Annotated[float | None, typer.Option(
                   help="Largest score difference accepted where the same bytes are not promised "
                        "(default: SCORE_TOLERANCE in prefgen/serving/image_sets.py).")] = None,
               params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Make an image again from its manifest row and check it: the same sha256 where it is made as it was (device
    class, dtype, torch version and machine), else the same scores within --tolerance. Exit 1 when that fails, when
    the file's bytes are not the image made, or when the bundle version that made it changed since."""
    from prefgen.registry.generate import BundleChanged, regenerate as again

    loaded, _ = _load(params)
    if device is not None:
        _check_device(device)
    try:
        result = again(tracking_config(loaded), Path.cwd(), target, manifest, out, device,
                       **({} if tolerance is None else {"tolerance": tolerance}))
    except BundleChanged as err:
        _log(f"MISMATCH: {err}")
        raise typer.Exit(code=1) from err
    except (*_errors(), ValueError) as err:  # ValueError: a device not here
        fail(str(err))
    _log_verdict(result)
    if not result["file_matches_manifest"]:
        _log(f"MISMATCH: {target} is not the image its manifest recorded (file sha256 {result['file_sha256']}, made as "
             f"{result['image_sha256']}): the file was edited or corrupted since it was made")
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    if not (result["kept"] and result["file_matches_manifest"]):
        raise typer.Exit(code=1)


def _log_verdict(result: dict[str, Any]) -> None:
    """One line for what was promised and one for whether it held."""
    shas = f"{result['image_sha256']} -> {result['regenerated_sha256']}"
    if not result["differs"]:
        _log(("match: " if result["match"] else "MISMATCH: ") + shas)
        return
    gaps = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result["score_gaps"].items()))
    _log(f"made otherwise ({'; '.join(result['differs'])}): the same bytes are promised only on the same device class, "
         f"dtype, torch version and machine, so this compares {result['promise']}")
    _log(f"bytes {'match' if result['match'] else 'differ'}: {shas}")
    _log(("scores match: " if result["scores_match"] else "MISMATCH: scores differ: ") + gaps)


def add_commands(app: typer.Typer) -> None:
    for command in (register, bundles, promote, rollback, generate, lineage, regenerate):
        app.command()(command)
