"""The judges that never guide (prefgen/eval/judges.py): their half of the interactions, their files, their answers."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from prefgen.eval import judges
from prefgen.stage_table import BY_NAME
from prefgen.vision.mapper_data import split_interactions
from tests.tiny_pipeline import run_command, stage_commands, tiny_params, write_params


@pytest.fixture(scope="module")
def judged_world(tmp_path_factory) -> Path:
    """A tiny world up to the image store, and the judges trained on it by their stage's own command."""
    import os

    work = tmp_path_factory.mktemp("judges")
    write_params(work, tiny_params())
    commands, here = stage_commands(), os.getcwd()
    os.chdir(work)
    try:
        for name in ("synth", "ingest", "split", "prepare_images", "image_store", "train_judges"):
            run_command(commands[name])
    finally:
        os.chdir(here)
    return work / "data"


def test_the_judge_half_is_a_hash_of_segment_and_image():
    keys = [(f"ind:u{k}", f"img{k % 37}") for k in range(2000)]
    inside = [judges.judge_half(s, i) for s, i in keys]
    assert inside == [judges.judge_half(s, i) for s, i in keys]  # the same pair, the same half, in any run
    assert 0.45 < np.mean(inside) < 0.55
    assert {judges.judge_half("ind:u1", f"img{k}") for k in range(20)} == {True, False}  # by image too, not by segment alone


def test_the_scorer_trains_on_its_half_of_the_train_images_only(judged_world):
    tables, split = judged_world / "02_tables", judged_world / "03_features" / "split.parquet"
    listed = judges.split_images(tables, judged_world / "03_features" / "prepared", split, ("train", "val", "cold"))
    ids = listed["image_id"].to_list()
    image_split = dict(listed.select("image_id", "split").iter_rows())
    task = judges.scorer_task(tables, split, ids, torch.randn(len(ids), 5), image_split)
    train_ids = [i for i in ids if image_split[i] == "train"]
    trained = {(task.segments[s], train_ids[i]) for s, i in task.data.pairs}
    every = {(s, i) for s, i in split_interactions(tables, split, "train").iter_rows() if i in set(train_ids)}
    assert trained == {pair for pair in every if judges.judge_half(*pair)}  # its half, all of it
    assert len(trained) < 0.6 * len(every)
    assert len(task.data.features) == len(train_ids)  # no val or cold image among its training rows
    assert task.data.p.shape == (len(task.segments), 0)  # no Step 1 vector reaches it


def test_the_stage_writes_judges_that_load_and_answer(judged_world):
    assert BY_NAME["train_judges"].writes[0] == "judges"
    folder = judged_world / "05_eval" / "judges"
    loaded = judges.Judges(folder)
    segments = pl.read_parquet(folder / judges.SEGMENTS_FILE)["segment_id"].to_list()
    pixels = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    features = loaded.features(pixels)
    scores = loaded.preference(segments[:3], features)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    with pytest.raises(KeyError, match="ind:nobody"):
        loaded.preference(["ind:nobody"], features[:1])
    prompts = ["a star", "a circle", "a square"]
    texts = judges.semantic.embed_texts(loaded.clip, loaded.tokenizer, prompts)
    planted = torch.cat([texts[[2, 0]], torch.zeros(2, features.shape[1] - texts.shape[1])], dim=1)
    assert loaded.prompt_choice(planted, prompts).tolist() == [2, 0]  # the nearest prompt of the tower's own text space
