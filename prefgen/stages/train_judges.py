"""DVC stage `train_judges`: params.yaml [train_judges], [train_clip] and [trainer]; the image store's (paths.images)
train and val (image, caption) pairs, the prepared images (paths.prepared) and the tables' training interactions ->
Step 3's judges that never guide (paths.judges; eval/judges.py): a second CLIP tower, trained with its own seed, and
a second preference scorer on its own image tower and half of the training interactions. Its metrics show each valid:
the tower's validation caption retrieval and the scorer's cold-start AUC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from prefgen.checkpoint import replace_folder
from prefgen.eval import judges
from prefgen.eval.config import TrainJudgesConfig
from prefgen.params import section
from prefgen.paths import Paths
from prefgen.training.config import Training, training_section
from prefgen.vision import semantic
from prefgen.vision.colour import ColourHistogram
from prefgen.vision.config import ClipConfig
from prefgen.vision.image_store import ImageStore
from prefgen.vision.vbpr import VBPRConfig

USER_ERRORS = (FileNotFoundError, ValueError)  # no image store or tables yet, or no interaction for the judge's half


@dataclass(frozen=True)
class TrainJudgesSettings:
    judges: TrainJudgesConfig
    clip: Training[ClipConfig]  # train_clip's tower and training settings; the judge's own seed replaces its seed


def load_config(params: dict[str, Any] | None) -> TrainJudgesSettings:
    return TrainJudgesSettings(section(params, TrainJudgesConfig, "train_judges"), training_section(params, ClipConfig, "train_clip"))


def scorer_config(cfg: TrainJudgesConfig) -> VBPRConfig:
    return VBPRConfig(dim=cfg.scorer_dim, lr=cfg.scorer_lr, reg=cfg.scorer_reg, max_epochs=cfg.scorer_max_epochs,
                      patience=cfg.scorer_patience, seed=cfg.seed)


def train_tower(clip: Training[ClipConfig], seed: int, paths: Paths, log: Callable[[str], None]) -> tuple[semantic.Model, ClipConfig, dict]:
    """The judge CLIP: train_clip's small tower with another seed, on the image store (never a pretrained checkpoint)."""
    tower_cfg = replace(clip.model, seed=seed, checkpoint="", model_name="")
    store = ImageStore(paths.images, size=tower_cfg.image_size)
    model, history = semantic.train_clip(store.dataset("train"), store.captions("train"), store.dataset("val"),
                                         store.captions("val"), tower_cfg, clip.trainer, paths.checkpoint_dir("judge_clip"),
                                         curve=paths.curve_file("train_judges"), log=log)
    kept = history.epochs[history.best_epoch]
    return model, tower_cfg, {"clip_val_acc": kept["val_acc"], "clip_best_epoch": history.best_epoch}


def run(cfg: TrainJudgesSettings, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    torch.set_num_threads(cfg.judges.threads)
    clip, clip_cfg, result = train_tower(cfg.clip, cfg.judges.clip_seed, paths, log)
    listed = judges.split_images(paths.tables, paths.prepared, paths.split, ("train", "val", "cold"))
    ids, features = judges.catalogue_features(clip, ColourHistogram(), listed, clip_cfg.image_size)
    image_split = dict(listed.select("image_id", "split").iter_rows())
    task = judges.scorer_task(paths.tables, paths.split, ids, features, image_split)
    scorer_cfg = scorer_config(cfg.judges)
    model = judges.train_scorer(task, scorer_cfg, cfg.clip.trainer, log)
    unseen = [k for k, i in enumerate(ids) if image_split[i] != "train"]
    scale = judges.segment_scale(model, len(task.segments), features[unseen] if len(unseen) > 1 else features)
    result |= judges.cold_auc(model, task, paths.tables, paths.split, ids, features)
    validity = {"clip_val_acc": result["clip_val_acc"], "scorer_cold_auc": result["scorer_cold_auc"]}
    replace_folder(paths.judges, lambda folder: judges.save(folder, clip, clip_cfg, model, task.segments, scale, scorer_cfg, validity))
    log(f"train_judges: CLIP tower val caption retrieval {result['clip_val_acc']:.3f}; scorer cold-start AUC "
        f"{result['scorer_cold_auc']:.3f} over {result['scorer_cold_segments']} segments (chance 0.5)")
    return result | {"scorer_segments": len(task.segments), "scorer_interactions": len(task.data.pairs),
                     "images": len(ids), "unseen_images": len(unseen)}
