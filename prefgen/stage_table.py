"""The table of stages: each dvc.yaml stage's command, params sections, and the catalogue paths it reads and writes.

The CLI makes one command per row (prefgen/stage_cli.py); the stage's code is prefgen/stages/<name>.py.
Kept outside prefgen/stages/ so that editing a help line is no stage's code dependency.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One dvc.yaml stage: what it is called, which params it reads, which catalogue paths it reads and writes."""

    name: str  # the dvc.yaml stage, its module under prefgen/stages/ and its MLflow `prefgen.stage` tag
    command: tuple[str, ...]  # the CLI words that run it, e.g. ("eval", "graph")
    help: str
    sections: tuple[str, ...]  # params.yaml sections its config is read from (logged with its MLflow run)
    reads: tuple[str, ...] = ()  # catalogue keys (prefgen/paths.py) it reads
    writes: tuple[str, ...] = ()  # catalogue keys it writes, beside its metrics file
    not_metrics: tuple[str, ...] = ()  # result keys that are facts about the run, not metrics (kept out of the metrics file)
    optional: tuple[str, ...] = ()  # reads it uses where the catalogue has them, and does without (a platform's truth)


_WORLD = ("world", "world_sha256")  # which synthetic world an evaluation judged on: a tag, not a metric

STAGES: tuple[Stage, ...] = (
    Stage("synth", ("synth",), "Generate the synthetic social world (raw logs, PNGs, ground truth).",
          ("synth",), writes=("raw", "truth")),
    Stage("ingest", ("ingest",), "Validate raw social logs and write Parquet tables; bad rows go to quarantine.",
          ("ingest",), reads=("raw",), writes=("tables",),
          not_metrics=("batch", "ignored_files", "skipped_files", "unreadable_files")),
    Stage("split", ("split",), "Assign every image to train | val | cold.", ("split",), reads=("tables",), writes=("split",)),
    Stage("centrality", ("centrality",), "Per-individual and per-(group, member) centrality features of the follow graph.",
          ("centrality",), reads=("tables", "split"), writes=("centrality",)),
    Stage("reference", ("reference",), "Baseline scores on the synthetic world (reads its ground truth: evaluation only).",
          ("reference",), reads=("truth", "raw", "tables", "split", "centrality"),
          not_metrics=(*_WORLD, "ref_influence_best_feature")),
    Stage("prepare_images", ("prepare-images",), "Every image the tables name as a square RGB PNG at the models' size (incremental); "
          "the rest rejected with a reason.", ("prepare_images", "image_size"), reads=("tables", "photos"), writes=("prepared",)),
    Stage("image_store", ("image-store",), "Copy the prepared train and val images once into uint8 shards (what image trainers stream).",
          ("image_store", "image_size"), reads=("tables", "prepared", "split"), writes=("images",), not_metrics=("digest",)),
    Stage("train_graph", ("train-graph",), "Step 1: train the social preference encoder on the train split (resumes from its checkpoint).",
          ("train_graph", "trainer"), reads=("tables", "split", "centrality", "visual"), writes=("graph", "checkpoints", "plots")),
    Stage("eval_graph", ("eval", "graph"), "influence_spearman: learned member attention against true influence.",
          ("eval_graph",), reads=("truth", "graph"), not_metrics=_WORLD),
    Stage("eval_holdout", ("eval", "holdout"), "Step 1 on the held-out window's clicks (HR@10, NDCG@10) against popularity, "
          "in dev and test halves; no ground truth.", ("eval_holdout",), reads=("tables", "split", "graph"),
          not_metrics=("holdout_from_ms", "negatives")),
    Stage("train_clip", ("train-clip",), "Step 2: train the semantic image tower (frozen MiniLM text tower) on train (image, caption) pairs.",
          ("train_clip", "trainer", "image_size"), reads=("images",), writes=("clip", "checkpoints", "plots"),
          not_metrics=("pretrained", "skipped")),
    Stage("visual_features", ("visual-features",), "Step 2: semantic, style and colour vectors of every image (incremental).",
          ("visual_features", "image_size"), reads=("tables", "prepared", "clip"), writes=("visual",), not_metrics=("skipped", "parts")),
    Stage("train_mapper", ("train-mapper",), "Step 2: train the GAN preference mapper (resumes from its checkpoint).",
          ("train_mapper", "trainer"), reads=("visual", "graph", "tables", "split"), writes=("mapper", "checkpoints", "plots")),
    Stage("eval_mapper", ("eval", "mapper"), "Cold-start AUC of the mapper on cold images against VBPR and random; with a world's "
          "truth also the oracle and utility_spearman.",
          ("train_mapper", "trainer"), reads=("truth", "mapper", "visual", "graph", "tables", "split"), not_metrics=_WORLD,
          optional=("truth",)),
    Stage("train_vq", ("train-vq",), "Step 3.1: train the VQ autoencoder, or load the local one params.yaml names (resumes from its checkpoint).",
          ("train_vq", "trainer", "image_size"), reads=("images",), writes=("vq", "checkpoints", "plots"),
          not_metrics=("pretrained", "skipped")),
    Stage("train_w", ("train-w",), "Step 3.2: train W, the map from Step 1's image space to the text space.",
          ("train_w", "trainer"), reads=("mapper", "visual", "split"), writes=("w",)),
    Stage("train_diffusion", ("train-diffusion",), "Step 3.3: train the conditioned latent diffusion model (resumes; runs unchanged under torchrun).",
          ("train_diffusion", "trainer"), reads=("vq", "w", "mapper", "clip", "visual", "images"),
          writes=("diffusion", "checkpoints", "plots"), not_metrics=("rank_weight_sha256", "skipped")),
    Stage("train_oracle", ("train-oracle",), "The evaluation oracle's shape and pattern classifier, on its own separately seeded renders.",
          ("train_oracle", "image_size"), writes=("oracle",)),
    Stage("eval_generation", ("eval", "generation"),
          "Personalisation win rate, text consistency, quality and the guidance ablations, judged by the oracle.",
          ("eval_generation", "sampler", "visual_features", "image_size"),
          reads=("truth", "diffusion", "vq", "w", "mapper", "graph", "oracle", "tables", "prepared", "split", "clip", "visual"),
          writes=("eval_generation",), not_metrics=_WORLD),
    Stage("train_judges", ("train-judges",), "Step 3's judges that never guide: a second CLIP tower (its own seed) and a second "
          "preference scorer on half the training interactions, each shown valid.",
          ("train_judges", "train_clip", "trainer", "image_size"), reads=("images", "tables", "prepared", "split"),
          writes=("judges", "checkpoints", "plots"), not_metrics=("unseen_images",)),
    Stage("eval_guidance", ("eval", "guidance"), "Fused guidance against unguided and CFG-only images, judged by the judges "
          "(preference uplift, text consistency); no ground truth.", ("eval_guidance", "sampler", "visual_features", "image_size"),
          reads=("judges", "diffusion", "vq", "w", "mapper", "graph", "tables", "split", "clip", "visual"),
          writes=("eval_guidance",)),
)

BY_NAME = {stage.name: stage for stage in STAGES}
