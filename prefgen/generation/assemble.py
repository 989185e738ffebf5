"""Build the guided sampler from the pipeline's outputs on disk (all local; nothing is downloaded)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from torch import Tensor

from prefgen.generation.conditioning import preference_prototype
from prefgen.generation.config import GuidanceConfig
from prefgen.generation.data import featured_split_ids, load_w, mapped_embeddings
from prefgen.generation.sampling import PreferenceDiffusionPipeline
from prefgen.generation.vq import load_vq
from prefgen.paths import Paths
from prefgen.vision import semantic
from prefgen.vision.config import VisualFeaturesConfig
from prefgen.vision.scorer import PreferenceScorer


def pipeline_from_outputs(paths: Paths, visual_cfg: VisualFeaturesConfig, guidance: GuidanceConfig = GuidanceConfig(),
                          device: str | torch.device = "cpu") -> PreferenceDiffusionPipeline:
    """The sampler wired to the stage outputs on `device`; the prototype's catalogue is the `train` images (mapped by G),
    as in training."""
    with torch.no_grad():
        catalogue = mapped_embeddings(paths.mapper, paths.visual, featured_split_ids(paths.split, paths.visual, "train"))
    return build_pipeline(paths.diffusion, paths.vq, paths.w, paths.mapper, paths.graph, paths.clip, visual_cfg, catalogue,
                          guidance, device)


def build_pipeline(diffusion_dir: Path, vq_dir: Path, w_dir: Path, mapper_dir: Path, graph_dir: Path, clip_dir: Path,
                   visual_cfg: VisualFeaturesConfig, catalogue: Tensor, guidance: GuidanceConfig = GuidanceConfig(),
                   device: str | torch.device = "cpu") -> PreferenceDiffusionPipeline:
    """The sampler wired to the trained models, every one placed on `device` (a torch device name: "cpu", "cuda",
    "cuda:1"; resolve a choice such as "auto" with prefgen.serving.devices first): CLIP text condition and score,
    Step 2 scorer, W and the prototype over `catalogue` (G(v) of the images the prototype averages, (N, d))."""
    device = torch.device(device)
    unet = UNet2DConditionModel.from_pretrained(diffusion_dir / "unet", use_safetensors=True, local_files_only=True,
                                                low_cpu_mem_usage=False).to(device)  # the plain load, as vq.load_vq
    # Older models saved diffusers' default clip_sample=True, which the sampler refuses (unet.build_noise_scheduler
    # says why); it does not act in training, so their weights are sound.
    scheduler = DDIMScheduler.from_pretrained(diffusion_dir / "scheduler", local_files_only=True, clip_sample=False)
    scaling = json.loads((diffusion_dir / "conditioning.json").read_text())["scaling_factor"]
    clip, clip_cfg = semantic.load_model(clip_dir)
    clip = clip.to(device)
    tokenizer = semantic.build_tokenizer(clip_cfg)
    scorer = PreferenceScorer.from_outputs(mapper_dir, graph_dir, clip_dir, visual_cfg).to(device)
    w, catalogue = load_w(w_dir).to(device), catalogue.to(device)
    with torch.no_grad():  # where each catalogue image lies in the text space, to match it against a prompt
        catalogue_text, clip_scale = w(catalogue), clip.logit_scale.exp()

    @lru_cache(maxsize=256)  # asked for by the condition, the prototype and every guided step's text score
    @torch.no_grad()
    def text_condition(prompt: str) -> Tensor:
        return clip.encode_text(tokenizer([prompt]).to(device), normalize=True)[0]  # the tokenizer's ids are on the CPU

    def text_score(pixels: Tensor, prompts: list[str]) -> Tensor:  # one prompt per image
        return (semantic.embed_images(clip, pixels) * torch.stack([text_condition(p) for p in prompts])).sum(1)

    @lru_cache(maxsize=4096)  # asked for by every sampler call of the job (the evaluation: once per arm)
    @torch.no_grad()
    def pref_condition(segment: str, prompt: str) -> Tensor:
        p = scorer.p[scorer.rows([segment])]
        logits = scorer.d(p[:, None, :].expand(-1, len(catalogue), -1), catalogue[None])
        weight = guidance.prototype_prompt_weight
        prompt_logits = weight * clip_scale * (catalogue_text @ text_condition(prompt)) if weight else None
        return w(preference_prototype(logits, catalogue, guidance.prototype_tau, prompt_logits))[0]

    def pref_score(pixels: Tensor, segments: list[str]) -> Tensor:  # one segment per image
        distinct = sorted(set(segments))
        rows = torch.tensor([distinct.index(s) for s in segments], device=pixels.device)
        return scorer.score(distinct, images=pixels)[rows, torch.arange(len(segments), device=pixels.device)]

    return PreferenceDiffusionPipeline(unet, scheduler, load_vq(vq_dir).to(device), scaling, text_condition, pref_condition,
                                       text_score, pref_score, guidance)
