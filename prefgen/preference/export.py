"""Step 1 outputs, the contract later steps read (../shared/DESIGN.md):

    segments.parquet     segment_id (ind:/grp:), kind, members, row  (row into p)
    vectors.safetensors  p [S, 2d] for every segment, items [I, d] image embeddings, project [d, 2d] (P)
    items.parquet        image_id, row  (row into items)
    attention.parquet    group_segment_id, member_segment_id, attention  (learned member influence)
    model.safetensors + config.json   the full encoder, for the registry and for resuming
    influence.json       which member features the attention reads and the cross-validation that chose them
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import polars as pl
import torch

from prefgen.checkpoint import save_tensors_atomic
from prefgen.preference.config import TrainGraphConfig
from prefgen.preference.stage_data import Indexed


@torch.no_grad()
def write_outputs(model, graphs, indexed: Indexed, cfg: TrainGraphConfig, out_dir: Path, influence: dict) -> dict[str, int]:
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    emb = model.embeddings(graphs)
    p_groups, p_users, attention = model.segment_vectors(graphs, emb)
    members = indexed.data.members
    by_group: dict[int, list[str]] = {}
    for g, u in members.tolist():
        by_group.setdefault(g, []).append(f"ind:{indexed.users[u]}")
    segments = pl.DataFrame({
        "segment_id": [f"grp:{g}" for g in indexed.groups] + [f"ind:{u}" for u in indexed.users],
        "kind": ["group"] * len(indexed.groups) + ["individual"] * len(indexed.users),
        "members": [by_group.get(k, []) for k in range(len(indexed.groups))] + [[f"ind:{u}"] for u in indexed.users],
    }, schema={"segment_id": pl.String, "kind": pl.String, "members": pl.List(pl.String)}).with_row_index("row")
    segments.write_parquet(out_dir / "segments.parquet")
    pl.DataFrame({"image_id": indexed.items}).with_row_index("row").write_parquet(out_dir / "items.parquet")
    pl.DataFrame({"group_segment_id": [f"grp:{indexed.groups[g]}" for g in members[:, 0]],
                  "member_segment_id": [f"ind:{indexed.users[u]}" for u in members[:, 1]],
                  "attention": attention.numpy()}).write_parquet(out_dir / "attention.parquet")
    save_tensors_atomic({"p": torch.cat([p_groups, p_users]), "items": emb["item"], "project": model.project.weight},
                        out_dir / "vectors.safetensors")
    save_tensors_atomic(model.state_dict(), out_dir / "model.safetensors")
    shape = {"n_users": indexed.data.n_users, "n_items": indexed.data.n_items, "n_groups": indexed.data.n_groups,
             "n_features": int(indexed.data.features.shape[1]), "feature_names": indexed.data.feature_names}
    (out_dir / "config.json").write_text(json.dumps({"train_graph": asdict(cfg), "shape": shape}, indent=2) + "\n")
    (out_dir / "influence.json").write_text(json.dumps(influence, indent=2) + "\n")
    return {"segments": segments.height, "groups": len(indexed.groups), "individuals": len(indexed.users), "items": len(indexed.items)}
