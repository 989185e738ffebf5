"""The parts benchmarks/gpu_check.py runs on one device: Step 1, CLIP, mapper, VQ, W and UNet through the training
core, data parallelism at world size 1 (NCCL on a GPU, gloo on the CPU), then one guided sampling batch.

Each part hands the next what it trained, so the sampler runs on the models trained here. Inputs are random or
planted in memory: the check measures that the code runs on the device and how fast, not what it learns.
"""

from __future__ import annotations

import copy
import json
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch.nn.parallel import DistributedDataParallel

from prefgen.generation.conditioning import fit_w, preference_prototype
from prefgen.generation.config import GuidanceConfig, TrainDiffusionConfig, TrainVQConfig, TrainWConfig
from prefgen.generation.sampling import PreferenceDiffusionPipeline
from prefgen.generation.train_diffusion import fit as fit_diffusion, tensor_data
from prefgen.generation.unet import build_noise_scheduler, context
from prefgen.generation.vq import fit_vq
from prefgen.preference.config import TrainGraphConfig
from prefgen.preference.task import TrainData
from prefgen.preference.train import train_for
from prefgen.training.config import TrainerConfig
from prefgen.vision import semantic
from prefgen.vision.config import ClipConfig, TrainMapperConfig, VisualFeaturesConfig
from prefgen.vision.scorer import PreferenceScorer
from prefgen.vision.train_mapper import MapperData, fit as fit_mapper

WORDS = ("a", "red", "blue", "green", "yellow", "star", "circle", "square", "ring", "with", "dots", "stripes")


@dataclass(frozen=True)
class Size:
    users: int = 2000
    items: int = 1000
    groups: int = 200
    images: int = 512
    image_size: int = 64
    epochs: int = 2
    batch: int = 64
    steps: int = 10  # DDIM steps of the sampling batch
    sample_batch: int = 8


TINY = Size(users=60, items=40, groups=8, images=32, image_size=32, epochs=1, batch=16, steps=2, sample_batch=2)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak so far (Linux: KiB)


def measured(name: str, device: torch.device, run: Callable[[], tuple[int, float, dict]]) -> dict:
    """One part: samples per second over the seconds it reports itself (training epochs, the sampling call)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    samples, seconds, extra = run()
    row = {"part": name, "device": device.type, "samples": samples, "seconds": round(seconds, 3),
           "samples_per_second": round(samples / seconds, 1) if seconds else None,
           "wall_seconds": round(time.perf_counter() - started, 2), "peak_memory_mb": round(peak_memory_mb(device), 1)} | extra
    print(json.dumps(row), flush=True)
    return row


def trained(history, per_epoch: int) -> tuple[int, float, dict]:
    seconds = sum(row["seconds"] for row in history.epochs)
    return per_epoch * len(history.epochs), seconds, {"epochs": len(history.epochs), "mixed_precision": history.mixed_precision}


def quiet(_line: str) -> None:
    pass


def step1(trainer: TrainerConfig, size: Size, out: dict) -> tuple[int, float, dict]:
    """Step 1 on random clicks and memberships: the full-graph propagation on every batch."""
    rng = np.random.default_rng(0)
    clicks = np.unique(np.stack([rng.integers(0, size.users, 8 * size.users), rng.integers(0, size.items, 8 * size.users)], 1), axis=0)
    members = np.unique(np.stack([np.repeat(np.arange(size.groups), 4), rng.integers(0, size.users, 4 * size.groups)], 1), axis=0)
    group_clicks = np.unique(np.stack([rng.integers(0, size.groups, 4 * size.groups), rng.integers(0, size.items, 4 * size.groups)], 1), axis=0)
    data = TrainData(size.users, size.items, size.groups, clicks, group_clicks, members, rng.normal(size=(len(members), 3)))
    cfg = TrainGraphConfig(dim=16, batch_size=8 * size.batch, threads=1)
    model, graphs, history = train_for(data, cfg, size.epochs, log=quiet, trainer=trainer)
    with torch.no_grad():
        p_groups, p_users, _ = model.segment_vectors(graphs)
        out["p"], out["items"] = torch.cat([p_groups, p_users]).float(), model.embeddings(graphs)["item"].float()
    out["project"], out["segments"] = model.project.weight.detach().float(), [f"grp:{g}" for g in range(size.groups)]
    return trained(history, len(clicks))


def tiny_text_tower(folder: Path) -> Path:
    """A randomly initialised two-layer BERT and a word-level vocabulary, saved as a local Hugging Face folder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def images_and_captions(size: Size, seed: int) -> tuple[torch.Tensor, list[str]]:
    gen = torch.Generator().manual_seed(seed)
    captions = [f"a {WORDS[1 + k % 4]} {WORDS[5 + k % 4]} with {WORDS[10 + k % 2]}" for k in range(size.images)]
    return torch.rand(size.images, 3, size.image_size, size.image_size, generator=gen), captions


def clip(trainer: TrainerConfig, size: Size, scratch: Path, out: dict) -> tuple[int, float, dict]:
    cfg = ClipConfig(embed_dim=32, image_size=size.image_size, vision_width=32, vision_layers=2, vision_heads=2,
                     vision_patch=8, text_model=str(tiny_text_tower(scratch / "text")), epochs=size.epochs,
                     batch_size=size.batch, threads=1)
    (images, captions), (val_images, val_captions) = images_and_captions(size, 0), images_and_captions(size, 1)
    model, history = semantic.train_clip(images, captions, val_images[:16], val_captions[:16], cfg, trainer, log=quiet)
    semantic.save_model(model, cfg, scratch / "clip")
    out["clip_dir"], out["images"], out["captions"] = scratch / "clip", images, captions
    return trained(history, len(images))


def mapper(trainer: TrainerConfig, size: Size, out: dict) -> tuple[int, float, dict]:
    """The GAN mapper (G and D, two optimisers) on the real feature extractors' vectors of the CLIP part's images."""
    visual = VisualFeaturesConfig(image_size=size.image_size)
    features = _features(visual, out["clip_dir"], out["images"])
    n, groups = len(features), len(out["segments"])
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, groups, 8 * n), rng.integers(0, n, 8 * n)], 1)
    positives = [(g, rng.choice(n, 4, replace=False)) for g in range(min(groups, 16))]
    data = MapperData(features, out["items"][rng.integers(0, len(out["items"]), n)], out["p"], out["project"], pairs,
                      features, positives)
    cfg = TrainMapperConfig(hidden=64, batch_size=4 * size.batch, max_epochs=size.epochs, threads=1)
    g, d, history = fit_mapper(data, cfg, trainer, log=quiet)
    out |= {"g": g, "d": d, "features": features, "visual": visual, "mapper_parts": cfg.part_names}
    return trained(history, len(pairs))


def _features(visual: VisualFeaturesConfig, clip_dir: Path, images: torch.Tensor) -> torch.Tensor:
    from prefgen.vision.extractors import PARTS, extractors

    parts = extractors(visual, clip_dir)
    with torch.no_grad():
        return torch.cat([parts[p][1](images) for p in PARTS], dim=1)


def vq(trainer: TrainerConfig, size: Size, out: dict) -> tuple[int, float, dict]:
    cfg = TrainVQConfig(image_size=size.image_size, block_out_channels=[16, 32, 64], norm_num_groups=8, num_vq_embeddings=64,
                        epochs=size.epochs, batch_size=size.batch // 2, threads=1)
    images = out["images"]
    model, history = fit_vq(images, images[:16], cfg, trainer, log=quiet)
    out["vq"] = model
    return trained(history, len(images))


def w(trainer: TrainerConfig, size: Size, out: dict) -> tuple[int, float, dict]:
    """W from G(v) to the CLIP image embedding; then both diffusion conditions of every image."""
    clip_model, clip_cfg = semantic.load_model(out["clip_dir"])
    tokenizer = semantic.build_tokenizer(clip_cfg)
    with torch.no_grad():
        e, s = out["g"](out["features"]), semantic.embed_images(clip_model, out["images"])
        text = semantic.embed_texts(clip_model, tokenizer, out["captions"])
    model, history = fit_w(e, s, e[:16], s[:16], TrainWConfig(hidden=64, max_epochs=4 * size.epochs), trainer, log=quiet)
    with torch.no_grad():
        pref = model(e)
    out |= {"w": model, "clip": clip_model, "tokenizer": tokenizer, "text": text, "pref": pref}
    return trained(history, len(e))


def unet(trainer: TrainerConfig, size: Size, out: dict) -> tuple[int, float, dict]:
    """The conditioned UNet on the VQ's latents of the images, with its EMA, through the core."""
    vq_model = out["vq"]
    with torch.no_grad():
        latents = vq_model.encode(out["images"] * 2 - 1).latents
    scaling = float(1 / latents.std())
    data = tensor_data(latents, out["text"], out["pref"], latents[:16], out["text"][:16], out["pref"][:16], scaling)
    latents = latents * scaling
    cfg = TrainDiffusionConfig(base_channels=32, norm_num_groups=16, epochs=size.epochs, batch_size=size.batch, threads=1)
    model, history = fit_diffusion(data, cfg, trainer, log=quiet)
    out |= {"unet": model, "diffusion_cfg": cfg, "scaling": scaling, "latents": latents}
    return trained(history, len(latents))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def data_parallel(device: torch.device, size: Size, out: dict) -> tuple[int, float, dict]:
    """A few eps-MSE steps of a copy of the UNet wrapped in DistributedDataParallel in a process group of one:
    NCCL's (or gloo's) collectives on every gradient, which the core's processes rely on."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(copy.deepcopy(out["unet"]).to(device).train(),
                                        device_ids=[device.index or 0] if device.type == "cuda" else None)
        optimizer, scheduler = torch.optim.AdamW(model.parameters(), lr=1e-4), build_noise_scheduler(out["diffusion_cfg"])
        gen, started, rows = torch.Generator().manual_seed(0), time.perf_counter(), 0
        for start in range(0, len(out["latents"]), size.batch):
            z0 = out["latents"][start : start + size.batch].to(device)
            noise = torch.randn(z0.shape, generator=gen).to(device)
            steps = torch.randint(0, scheduler.config.num_train_timesteps, (len(z0),), generator=gen).to(device)
            cond = context(out["text"][start : start + size.batch], out["pref"][start : start + size.batch]).to(device)
            loss = F.mse_loss(model(scheduler.add_noise(z0, noise, steps), steps, encoder_hidden_states=cond).sample, noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            rows += len(z0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return rows, time.perf_counter() - started, {"backend": backend, "world_size": dist.get_world_size(),
                                                     "loss_finite": bool(torch.isfinite(loss).item())}
    finally:
        dist.destroy_process_group()


def sampler(device: torch.device, out: dict, guidance: GuidanceConfig) -> PreferenceDiffusionPipeline:
    """The guided sampler on the models trained above, every one on `device` (as prefgen/generation/assemble.py wires it)."""
    clip_model, tokenizer, w_model = out["clip"].to(device), out["tokenizer"], out["w"].to(device)
    rows = {segment: k for k, segment in enumerate(out["segments"])}
    scorer = PreferenceScorer(out["g"], out["d"], out["p"], rows, out["visual"], out["mapper_parts"], out["clip_dir"]).to(device)
    with torch.no_grad():
        catalogue = scorer.g(out["features"].to(device))

    @torch.no_grad()
    def text_condition(prompt: str) -> torch.Tensor:
        return clip_model.encode_text(tokenizer([prompt]).to(device), normalize=True)[0]

    def text_score(pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return (semantic.embed_images(clip_model, pixels) * torch.stack([text_condition(p) for p in prompts])).sum(1)

    @torch.no_grad()
    def pref_condition(segment: str, prompt: str) -> torch.Tensor:
        p = scorer.p[scorer.rows([segment])]
        logits = scorer.d(p[:, None, :].expand(-1, len(catalogue), -1), catalogue[None])
        return w_model(preference_prototype(logits, catalogue, guidance.prototype_tau))[0]

    def pref_score(pixels: torch.Tensor, segments: list[str]) -> torch.Tensor:
        distinct = sorted(set(segments))
        index = torch.tensor([distinct.index(s) for s in segments], device=pixels.device)
        return scorer.score(distinct, images=pixels)[index, torch.arange(len(segments), device=pixels.device)]

    schedule = DDIMScheduler.from_config(build_noise_scheduler(out["diffusion_cfg"]).config, clip_sample=False)
    return PreferenceDiffusionPipeline(out["unet"].to(device), schedule, out["vq"].to(device), out["scaling"], text_condition,
                                       pref_condition, text_score, pref_score, guidance)


def sampling(device: torch.device, size: Size, out: dict) -> tuple[int, float, dict]:
    """One guided batch: two segments, one prompt, classifier-free guidance and both score gradients."""
    pipe = sampler(device, out, GuidanceConfig(steps=size.steps))
    segments, count = out["segments"][:2], 2 * size.sample_batch
    generators = [torch.Generator().manual_seed(k) for k in range(count)]
    started = time.perf_counter()
    images = pipe(segments, ["a red star"] * 2, n=size.sample_batch, generator=generators)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    finite = bool(torch.isfinite(images).all().item())
    return count, seconds, {"images_per_second": round(count / seconds, 2), "steps": size.steps, "finite": finite,
                            "image_shape": list(images.shape[1:]), "dtype": str(pipe.dtype)}


def run_parts(device_name: str, tiny: bool, scratch: Path) -> list[dict]:
    """Every part on one device, in order, each handing the next what it trained."""
    device, size = torch.device(device_name), TINY if tiny else Size()
    trainer = TrainerConfig(device=device_name)  # mixed precision auto: bf16 (fp16 without it) on a GPU, none on the CPU
    folder, out = scratch / device_name, {}
    parts: list[tuple[str, Callable[[], tuple[int, float, dict]]]] = [
        ("step1", lambda: step1(trainer, size, out)), ("clip", lambda: clip(trainer, size, folder, out)),
        ("mapper", lambda: mapper(trainer, size, out)), ("vq", lambda: vq(trainer, size, out)),
        ("w", lambda: w(trainer, size, out)), ("unet", lambda: unet(trainer, size, out)),
        ("data_parallel", lambda: data_parallel(device, size, out)), ("sampling", lambda: sampling(device, size, out))]
    return [measured(name, device, part) for name, part in parts]
