"""Step 1 outputs, the contract later steps read (../shared/DESIGN.md):

    segments.parquet     segment_id (ind:/grp:), kind, members, row  (row into p)
    vectors.safetensors  p [S, 2d] for every segment, items [I, d] image embeddings, project [d, 2d] (P)
    items.parquet        image_id, row  (row into items)
    attention.parquet    group_segment_id, member_segment_id, attention  (learned member influence)
    model.safetensors + config.json   the full encoder, for the registry and for resuming
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import polars as pl
import torch
from safetensors.torch import save_file

from prefgen.config import TrainGraphConfig
from prefgen.preference.stage_data import Indexed


def _atomic_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def write_outputs(model, graphs, indexed: Indexed, cfg: TrainGraphConfig, out_dir: Path) -> dict[str, int]:
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
    _atomic_safetensors({"p": torch.cat([p_groups, p_users]), "items": emb["item"], "project": model.project.weight},
                        out_dir / "vectors.safetensors")
    _atomic_safetensors(model.state_dict(), out_dir / "model.safetensors")
    shape = {"n_users": indexed.data.n_users, "n_items": indexed.data.n_items, "n_groups": indexed.data.n_groups,
             "n_features": int(indexed.data.features.shape[1]), "feature_names": indexed.feature_names}
    (out_dir / "config.json").write_text(json.dumps({"train_graph": asdict(cfg), "shape": shape}, indent=2) + "\n")
    return {"segments": segments.height, "groups": len(indexed.groups), "individuals": len(indexed.users), "items": len(indexed.items)}
