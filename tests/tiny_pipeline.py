"""dvc.yaml's stages run for real by their own commands, in this process, on a tiny synthetic world.

Shared by the truth guard (every non-evaluation stage with the truth out of reach)
and the deletion test (a retrain after `forget` against one on the raw log without
the person). In-process so that an audit hook sees every open, and so that a run
takes seconds rather than a new interpreter per stage.
"""

import shlex
from pathlib import Path

import yaml

from prefgen.cli import app
from tests.conftest import DEFAULT_WORLD, ROOT, shrink

TINY_WORLD = "world-guard"


def tiny_params(world: str = TINY_WORLD, store: Path | None = None) -> dict:
    """params.yaml on a tiny world, every trainer at one or two epochs and one thread, no MLflow run;
    with `store`, every catalogue path is rooted there (absolute) instead of under the working folder."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text().replace(DEFAULT_WORLD, world))
    if store is not None:
        params["paths"] = {key: str(store / value) for key, value in params["paths"].items()}
    shrink(params, "synth", n_individuals=200, n_communities=3, n_groups=20, group_size_max=10, n_images=80)
    tiny_trainers(params)
    shrink(params, "train_oracle", n_train=64, n_test=16, width=4, feature_dim=8, epochs=1, threads=1)
    shrink(params, "eval_generation", pairs_per_prompt=1, reference_images=16, bootstrap=50, threads=1, workers=1, images_per_batch=2)
    params["tracking"]["enabled"] = False
    return params


def tiny_trainers(params: dict) -> None:
    """Every trainer of a pipeline (a project's or a pipeline folder's) at one or two epochs and one thread, in place."""
    shrink(params, "centrality", threads=1)
    shrink(params, "eval_holdout", negatives=20, bootstrap=100)  # a tiny world has fewer than 100 unclicked train images
    shrink(params, "train_graph", max_epochs=1, influence_folds=2)
    shrink(params, "train_clip", epochs=1, vision_width=32, vision_layers=1, vision_heads=2, threads=1)
    shrink(params, "train_mapper", max_epochs=1)
    shrink(params, "train_w", max_epochs=2)
    shrink(params, "train_vq", block_out_channels=[8, 8, 8], norm_num_groups=4, num_vq_embeddings=32, epochs=1, threads=1)
    shrink(params, "train_diffusion", base_channels=8, norm_num_groups=4, epochs=1, threads=1)
    shrink(params, "train_judges", scorer_max_epochs=2, threads=1)
    shrink(params, "eval_guidance", segments_per_half=2, n_prompts=2, bootstrap=50, threads=1, workers=1, images_per_batch=2)


def write_params(folder: Path, params: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage_commands() -> dict[str, str]:
    """Each dvc.yaml stage's command."""
    return {name: stage["cmd"] for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()}


def run_command(cmd: str) -> None:
    """A dvc.yaml `python -m prefgen ...` command, run in this process (from the current directory)."""
    args = shlex.split(cmd)
    assert args[:3] == ["python", "-m", "prefgen"], cmd
    code = app(args[3:], standalone_mode=False)  # without standalone mode a failing command returns its exit code
    assert code in (None, 0), f"{cmd} exited {code}"
