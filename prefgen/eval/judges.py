"""Judges of Step 3 that never guide: a second preference scorer and a second CLIP tower, trained apart.

A platform has no ground truth, so generated images are judged by models the sampler never reads:

    judge CLIP        the small CLIP image tower of vision/semantic.py trained again with its own seed (train_clip's
                      other settings): text consistency reads it, never the guide's tower
    judge scorer      VBPR (vision/vbpr.py) on the judge's own image tower, v(x) = judge CLIP(x) ⊕ a hard Lab colour
                      histogram, with its own segment factors: score(s, x) = θ_s · E v(x) + β' v(x). No Step 1 vector,
                      mapper or visual feature of the guide enters it
    its half          it trains on the training interactions whose hash of "segment|image" is odd
                      (`judge_half`): the other half and every cold image stay unseen by it

Each is shown valid before it judges: the CLIP tower's validation caption retrieval, and the scorer's cold-start AUC
on the clicks of cold images (the protocol of eval_mapper's cold_auc). A segment's scores are standardised by their
mean and spread over the real val and cold images, so an uplift is in standard deviations of that segment's scores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from prefgen.data import contract as c
from prefgen.data.tables import scan_parts
from prefgen.eval.reference import cold_task, summarise_auc
from prefgen.metrics.ranking import segment_interactions
from prefgen.training.config import TrainerConfig
from prefgen.vision import semantic
from prefgen.vision.colour import ColourHistogram
from prefgen.vision.config import ClipConfig
from prefgen.vision.mapper_data import split_interactions
from prefgen.vision.pixels import read_image, with_pixels
from prefgen.vision.train_mapper import MapperData
from prefgen.vision.vbpr import VBPRConfig, VisualBPR, fit_vbpr

CLIP_DIR, SCORER_FILE, SEGMENTS_FILE, CONFIG_FILE = "clip", "scorer.safetensors", "segments.parquet", "judges.json"
_SALT = "prefgen-judge:"


def judge_half(segment: str, image: str) -> bool:
    """Whether the judge scorer may train on this (segment, image) interaction: an odd first byte of its hash."""
    return bool(hashlib.sha256(f"{_SALT}{segment}|{image}".encode("utf-8")).digest()[0] & 1)


@torch.no_grad()
def image_features(clip: semantic.Model, colour: ColourHistogram, pixels: Tensor) -> Tensor:
    """v(x) = judge CLIP(x) ⊕ hard colour histogram: (B, 3, H, W) in [0, 1] -> (B, embed_dim + colour dim)."""
    return torch.cat([semantic.embed_images(clip, pixels), colour.hard(pixels)], dim=1)


def split_images(tables_dir: Path, prepared_dir: Path, split_path: Path, names: tuple[str, ...]) -> pl.DataFrame:
    """image_id, caption, file, split of the readable-looking prepared images of the named splits, sorted by id."""
    split = pl.read_parquet(split_path).filter(pl.col("split").is_in(list(names))).select("image_id", "split")
    return with_pixels(tables_dir, prepared_dir).filter(pl.col("file") != "").join(split, on="image_id").sort("image_id")


def catalogue_features(clip: semantic.Model, colour: ColourHistogram, images: pl.DataFrame, size: int,
                       batch: int = 256) -> tuple[list[str], Tensor]:
    """(image ids, features) of the listed prepared images, `batch` decoded at a time; unreadable files are left out."""
    ids, chunks = [], []
    for start in range(0, images.height, batch):
        read = [(i, read_image(Path(f), size)[0]) for i, f in images.slice(start, batch).select("image_id", "file").iter_rows()]
        read = [(i, pixels) for i, pixels in read if pixels is not None]
        if read:
            ids += [i for i, _ in read]
            chunks.append(image_features(clip, colour, torch.stack([pixels for _, pixels in read])))
    if not chunks:
        raise ValueError("no readable prepared image to compute the judges' features of")
    return ids, torch.cat(chunks)


@dataclass(frozen=True)
class ScorerTask:
    """The judge scorer's data: MapperData of its own segments and features (no Step 1 tensor: VBPR reads none)."""

    data: MapperData
    segments: list[str]  # row -> segment id


def scorer_task(tables_dir: Path, split_path: Path, ids: list[str], features: Tensor, image_split: dict[str, str]) -> ScorerTask:
    """Train pairs of the judge's half and val positives, over the segments with a pair in that half."""
    row = {i: k for k, i in enumerate(ids)}
    train_ids, val_ids = [i for i in ids if image_split[i] == "train"], [i for i in ids if image_split[i] == "val"]
    train_row, val_row = {i: k for k, i in enumerate(train_ids)}, {i: k for k, i in enumerate(val_ids)}
    pairs = [(s, i) for s, i in split_interactions(tables_dir, split_path, "train").iter_rows() if i in train_row and judge_half(s, i)]
    if not pairs:
        raise ValueError("the judge scorer has no training interaction: no train image with a click in its half")
    segments = sorted({s for s, _ in pairs})
    seg_row = {s: k for k, s in enumerate(segments)}
    val = split_interactions(tables_dir, split_path, "val").filter(pl.col("image_id").is_in(val_ids) & pl.col("segment_id").is_in(segments))
    val_positives = [(seg_row[s], np.array([val_row[i] for i in g["image_id"].to_list()]))
                     for (s,), g in val.group_by("segment_id", maintain_order=True)]
    empty = torch.zeros(len(train_ids), 0)
    data = MapperData(features[[row[i] for i in train_ids]], empty, torch.zeros(len(segments), 0), torch.zeros(0, 0),
                      np.array([(seg_row[s], train_row[i]) for s, i in pairs], dtype=np.int64),
                      features[[row[i] for i in val_ids]], val_positives)
    return ScorerTask(data, segments)


@torch.no_grad()
def segment_scale(model: VisualBPR, n_segments: int, features: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, std) per segment row of its scores over `features` (the real images it did not train on)."""
    scores = model(torch.arange(n_segments), features)
    return scores.mean(1), scores.std(1).clamp_min(1e-6)


def cold_auc(model: VisualBPR, task: ScorerTask, tables_dir: Path, split_path: Path, ids: list[str], features: Tensor) -> dict:
    """The scorer's cold-start AUC over the segments it knows (eval_mapper's protocol): its validity on unseen images."""
    events = scan_parts(tables_dir / c.EVENTS_DIR, c.EVENTS_SCHEMA).collect()
    cold = cold_task(segment_interactions(events), pl.read_parquet(split_path).filter(pl.col("image_id").is_in(ids)))
    seg_row, row = {s: k for k, s in enumerate(task.segments)}, {i: k for k, i in enumerate(ids)}
    known = [k for k, s in enumerate(cold.segments) if s in seg_row]
    if not known:
        return {"scorer_cold_auc": float("nan"), "scorer_cold_segments": 0}
    with torch.no_grad():
        scores = model(torch.as_tensor([seg_row[cold.segments[k]] for k in known]),
                       features[[row[i] for i in cold.cold_ids]]).numpy()
    picked = dataclasses.replace(cold, segments=[cold.segments[k] for k in known],
                                 train_images=[cold.train_images[k] for k in known], positives=cold.positives[known])
    figures = summarise_auc(picked, scores, "scorer_cold_auc")
    return {"scorer_cold_auc": figures["scorer_cold_auc"], "scorer_cold_segments": len(known)}


def train_scorer(task: ScorerTask, cfg: VBPRConfig, trainer: TrainerConfig, log: Callable[[str], None]) -> VisualBPR:
    log(f"judge scorer: {len(task.data.pairs)} interactions of {len(task.segments)} segments (its half)")
    return fit_vbpr(task.data, cfg, trainer, log=log)


def save(folder: Path, clip: semantic.Model, clip_cfg: ClipConfig, model: VisualBPR, segments: list[str],
         scale: tuple[Tensor, Tensor], scorer_cfg: VBPRConfig, validity: dict[str, float]) -> None:
    """The judges and their validity figures into `folder` (a new folder: the stage writes it whole through replace_folder)."""
    folder.mkdir(parents=True)
    semantic.save_model(clip, clip_cfg, folder / CLIP_DIR)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / SCORER_FILE)
    scales = pl.DataFrame({"segment_id": segments, "score_mean": scale[0].numpy(), "score_std": scale[1].numpy()})
    scales.write_parquet(folder / SEGMENTS_FILE)
    saved = {"scorer": dataclasses.asdict(scorer_cfg), "validity": validity}
    (folder / CONFIG_FILE).write_text(json.dumps(saved, indent=2), encoding="utf-8")


class Judges:
    """The saved judges: standardised preference scores and prompt retrieval of any images."""

    def __init__(self, folder: Path):
        self.clip, self.clip_cfg = semantic.load_model(folder / CLIP_DIR)
        self.tokenizer = semantic.build_tokenizer(self.clip_cfg)
        self.colour = ColourHistogram()
        state, saved = load_file(folder / SCORER_FILE), json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        scorer_cfg, self.validity = VBPRConfig(**saved["scorer"]), saved["validity"]
        self.scorer = VisualBPR(state["theta.weight"].shape[0], state["feature_mean"], state["feature_std"], scorer_cfg.dim)
        self.scorer.load_state_dict(state)
        self.scorer.eval()
        segments = pl.read_parquet(folder / SEGMENTS_FILE)
        self.segment_row = {s: k for k, s in enumerate(segments["segment_id"])}
        self.mean, self.std = (torch.tensor(segments[col].to_numpy()) for col in ("score_mean", "score_std"))

    def features(self, pixels: Tensor, batch: int = 256) -> Tensor:
        return torch.cat([image_features(self.clip, self.colour, chunk) for chunk in _chunks(pixels, batch)])

    @torch.no_grad()
    def preference(self, segments: list[str], features: Tensor) -> np.ndarray:
        """(n,) standardised score of image k for segments[k]; unknown segments are a KeyError naming them."""
        unknown = sorted({s for s in segments if s not in self.segment_row})
        if unknown:
            raise KeyError(f"the judge scorer knows no segment {unknown[:5]} (no interaction in its half)")
        rows = torch.as_tensor([self.segment_row[s] for s in segments])
        projected, bias = self.scorer.item_side(features)
        raw = (self.scorer.theta(rows) * projected).sum(-1) + bias
        return ((raw - self.mean[rows]) / self.std[rows]).double().numpy()

    @torch.no_grad()
    def prompt_choice(self, features: Tensor, prompts: list[str]) -> np.ndarray:
        """(n,) index of the prompt each image's judge-CLIP embedding (the first part of its features) is nearest to."""
        texts = semantic.embed_texts(self.clip, self.tokenizer, prompts)
        return (features[:, : texts.shape[1]] @ texts.T).argmax(1).numpy()


def _chunks(pixels: Tensor, batch: int) -> Iterator[Tensor]:
    return (pixels[i : i + batch] for i in range(0, len(pixels), batch))
