"""Step 2 inputs from the pipeline: visual features, Step 1 outputs, train/val interactions -> MapperData.

Reads interactions only through `training_events` (train images for the pairs,
val images for early stopping): no cold image's interaction reaches a trainer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from prefgen.data.split import training_events
from prefgen.metrics.ranking import segment_interactions
from prefgen.preference.outputs import Step1, load_step1  # noqa: F401  (load_step1: read through here by Step 2)
from prefgen.vision.config import TrainMapperConfig
from prefgen.vision.train_mapper import MapperData

PARTS = ("semantic", "style", "colour")


def read_features(features_dir: Path, parts: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """(image ids, v = the parts side by side) for images that have every part."""
    tables = [pl.read_parquet(features_dir / f"{part}.parquet").select("image_id", pl.col("vector").alias(part)) for part in parts]
    joined = tables[0]
    for table in tables[1:]:
        joined = joined.join(table, on="image_id", how="inner")
    joined = joined.sort("image_id")
    matrix = np.concatenate([np.stack(joined[part].to_list()).astype(np.float32) for part in parts], axis=1)
    return joined["image_id"].to_list(), matrix


def split_interactions(tables_dir: Path, split: Path, split_name: str) -> pl.DataFrame:
    events = training_events(tables_dir, split, allowed=(split_name,)).collect()
    # Sorted: polars' unique() has no fixed order, and the pair order feeds the seeded batches.
    return segment_interactions(events).select("segment_id", "image_id").unique().sort("segment_id", "image_id")


def load(cfg: TrainMapperConfig, step1: Step1, features_dir: Path, tables_dir: Path, split_path: Path) -> tuple[MapperData, list[str]]:
    """MapperData and the train image ids (rows of its features), from Step 1's outputs, the visual features,
    and the train and val interactions of the tables."""
    ids, matrix = read_features(features_dir, cfg.part_names)
    split = dict(pl.read_parquet(split_path).select("image_id", "split").iter_rows())
    train_ids = [i for i in ids if split.get(i) == "train" and i in step1.item_row]
    val_ids = [i for i in ids if split.get(i) == "val"]
    row = {i: k for k, i in enumerate(ids)}
    train_row, val_row = {i: k for k, i in enumerate(train_ids)}, {i: k for k, i in enumerate(val_ids)}
    train = split_interactions(tables_dir, split_path, "train").filter(pl.col("image_id").is_in(train_ids) & pl.col("segment_id").is_in(list(step1.segment_row)))
    pairs = np.array([(step1.segment_row[s], train_row[i]) for s, i in train.iter_rows()], dtype=np.int64).reshape(-1, 2)
    val = split_interactions(tables_dir, split_path, "val").filter(pl.col("image_id").is_in(val_ids) & pl.col("segment_id").is_in(list(step1.segment_row)))
    val_positives = [(step1.segment_row[s], np.array([val_row[i] for i in g["image_id"].to_list()]))
                     for (s,), g in val.group_by("segment_id", maintain_order=True)]
    targets = step1.items[torch.as_tensor([step1.item_row[i] for i in train_ids])]
    scale = targets.pow(2).sum(-1).mean().sqrt()  # RMS norm: α means the same at any embedding scale
    data = MapperData(torch.as_tensor(matrix[[row[i] for i in train_ids]]), targets / scale, step1.p, step1.project * scale,
                      pairs, torch.as_tensor(matrix[[row[i] for i in val_ids]]), val_positives)
    return data, train_ids
