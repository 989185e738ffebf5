"""Step 3.4-3.5: images for a segment and a prompt, sampled with classifier-free and multi-gradient guidance.

    images = pipe(segment="grp:g7", prompt="a red star on a dots background", n=4, generator=torch.Generator().manual_seed(0))
    images = pipe(["grp:g7", "ind:u3"], ["a star", "a circle"], n=2, latents=noise)   # two jobs in one batch: (4, 3, H, W)
    z4 = pipe("grp:g7", "a star", n=2, latents=noise[:2], stop_step=4)                 # steps 0-3 only: latents
    images = pipe("grp:g7", "a star", n=2, latents=z4, start_step=4)                    # ... and the rest

Each step (DDIM from pure noise; METHOD.md 3.5):
    eps   = eps(0, 0) + w_s (eps(s, 0) - eps(0, 0)) + w_p (eps(s, p~) - eps(s, 0))      classifier-free guidance
    x_t   = Dz(z0(z_t, eps))                                                           the x0-prediction, decoded unquantised
    g_p   = grad_z pref(g, x_t),  g_s = grad_z <E_s(x_t), s>                            with eps detached
    eps^  = eps - sqrt(1 - a_t) * fuse(lambda_p g_p, lambda_s g_s)                     only where guidance acts
`fuse` normalises each gradient and, where they conflict (negative cosine), removes from
each its component along the other before weighting (METHOD.md 3.5's projection).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from prefgen.generation.config import GuidanceConfig
from prefgen.generation.unet import context

# (pixels (B, 3, H, W) in [0, 1], one segment or prompt per image) -> (B,) differentiable scores
Score = Callable[[Tensor, list[str]], Tensor]


def fuse(g_pref: Tensor, g_text: Tensor, lambda_pref: float, lambda_text: float) -> Tensor:
    """Per sample: scale both gradients to unit RMS (the scale of eps, so lambda reads as a share of the noise
    prediction); where their cosine is negative, project each onto the normal plane of the other (neither
    guide undoes the other); then weight and add."""
    shape, size = g_pref.shape, g_pref[0].numel()
    a, b = F.normalize(g_pref.flatten(1), dim=1), F.normalize(g_text.flatten(1), dim=1)
    cos = (a * b).sum(1, keepdim=True)
    conflict = (cos < 0).to(a.dtype)
    a_free, b_free = (a - conflict * cos * b) * size**0.5, (b - conflict * cos * a) * size**0.5
    return (lambda_pref * a_free + lambda_text * b_free).reshape(shape)


def guided(cfg: GuidanceConfig, index: int) -> bool:
    """Whether gradient guidance acts at DDIM step `index`: on the share [guide_from, guide_until) of the steps,
    where either lambda is on."""
    return bool(cfg.lambda_pref or cfg.lambda_text) and cfg.guide_from * cfg.steps <= index < cfg.guide_until * cfg.steps


class PreferenceDiffusionPipeline:
    """The guided sampler: a trained UNet + DDIM scheduler + VQ decoder, conditions, and the two differentiable scorers.

    Args:
        unet: the conditioned denoiser (stage `train_diffusion`).
        scheduler: a diffusers DDIMScheduler built from the training schedule.
        vq: the VQModel whose latents the UNet models.
        scaling_factor (float): latents were multiplied by this for training.
        text_condition: prompt -> (D,) text embedding; text_score: (pixels, a prompt per image) -> (B,) CLIP similarity.
        pref_condition: (segment, prompt) -> (D,) W(e^_g); pref_score: (pixels, a segment per image) -> (B,) Step 2 preference.
    """

    def __init__(self, unet, scheduler, vq, scaling_factor: float, text_condition: Callable[[str], Tensor],
                 pref_condition: Callable[[str, str], Tensor], text_score: Score, pref_score: Score, guidance: GuidanceConfig = GuidanceConfig()):
        if scheduler.config.get("clip_sample", False):
            raise ValueError("the scheduler clips x0-predictions to [-1, 1], which cuts unit-variance latents: "
                             "build it with clip_sample=False (unet.build_noise_scheduler)")
        self.unet, self.scheduler, self.vq, self.scaling_factor = unet.eval(), scheduler, vq.eval(), scaling_factor
        self.text_condition, self.pref_condition = text_condition, pref_condition
        self.text_score, self.pref_score, self.guidance = text_score, pref_score, guidance
        for module in (self.unet, self.vq):
            module.requires_grad_(False)  # gradients flow to the latents only

    def _eps(self, z: Tensor, t: Tensor, text: Tensor, pref: Tensor) -> Tensor:
        """Classifier-free guidance over the three context variants (both off, text only, both on), in one batched
        UNet call; a variant whose weight is zero is not computed (w_s = w_p = 1 is the plain conditional model)."""
        cfg, zero = self.guidance, torch.zeros_like(text)
        variants = [(1 - cfg.text_scale, context(zero, zero)), (cfg.text_scale - cfg.pref_scale, context(text, zero)),
                    (cfg.pref_scale, context(text, pref))]
        weights, contexts = zip(*[(w, ctx) for w, ctx in variants if w != 0])
        with torch.no_grad():
            eps = self.unet(torch.cat([z] * len(contexts)), t, encoder_hidden_states=torch.cat(contexts)).sample.chunk(len(contexts))
        return sum(w * e for w, e in zip(weights, eps))

    def decode(self, latents: Tensor, quantize: bool = True) -> Tensor:
        """Scaled latents -> pixels in [0, 1]; unquantised while guiding (the codebook lookup has no gradient)."""
        x = self.vq.decode(latents / self.scaling_factor, force_not_quantize=not quantize).sample
        return ((x + 1) / 2).clamp(0, 1)

    def _guidance_gradient(self, z: Tensor, eps: Tensor, alpha_bar: Tensor, segments: list[str], prompts: list[str]) -> Tensor:
        """grad_z of both scores of the decoded x0-prediction (image b scored for segments[b] and prompts[b]),
        eps held fixed, fused."""
        z = z.detach().requires_grad_(True)
        pixels = self.decode((z - (1 - alpha_bar).sqrt() * eps.detach()) / alpha_bar.sqrt(), quantize=False)
        both = bool(self.guidance.lambda_pref and self.guidance.lambda_text)  # two backward passes share the decoder's graph
        g_pref = torch.autograd.grad(self.pref_score(pixels, segments).sum(), z, retain_graph=both)[0] if self.guidance.lambda_pref else torch.zeros_like(z)
        g_text = torch.autograd.grad(self.text_score(pixels, prompts).sum(), z)[0] if self.guidance.lambda_text else torch.zeros_like(z)
        return fuse(g_pref, g_text, self.guidance.lambda_pref, self.guidance.lambda_text)

    @property
    def device(self) -> torch.device:
        """Where the models are: every tensor of a sampling run is made or moved here."""
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image's latent: the shape of starting noise to pass as `latents`."""
        return self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size

    def __call__(self, segment: str | list[str], prompt: str | list[str], n: int = 4,
                 generator: torch.Generator | list[torch.Generator] | None = None, latents: Tensor | None = None,
                 start_step: int = 0, stop_step: int | None = None) -> Tensor:
        """n images in [0, 1] for `segment` (e.g. "grp:g7") and `prompt`: (n, 3, H, W). Lists of segments and prompts
        (job j = (segment[j], prompt[j])) are sampled in one batch: (J * n, 3, H, W), job by job. The starting noise
        comes from `latents` (J * n, *latent_shape) where given, else from `generator`: with a list of J * n
        generators each image's noise comes from its own (one seed per image, as diffusers does). Generators are
        CPU ones and the noise is drawn in float32 on the CPU, then moved to the models' device and dtype (as
        diffusers' randn_tensor does), so a seed means the same noise on every device. Images come back on the
        models' device.

        Only DDIM steps start_step <= index < stop_step run (as diffusers' denoising_start / denoising_end hand
        latents from one pipeline to the next): a run that stops early returns its latents, not pixels, and one
        that starts late takes as `latents` those a run with the same classifier-free guidance stopped at. Runs
        that differ only where guidance acts so share their unguided first steps."""
        if isinstance(segment, str) != isinstance(prompt, str) or (not isinstance(segment, str) and len(segment) != len(prompt)):
            raise ValueError(f"give one segment and one prompt, or equal-length lists (got {segment!r} and {prompt!r})")
        stop_step = self.guidance.steps if stop_step is None else stop_step
        if not 0 <= start_step < stop_step <= self.guidance.steps or (start_step and latents is None):
            raise ValueError(f"steps [{start_step}, {stop_step}) are not a run of 0..{self.guidance.steps}, or a late "
                             "start has no `latents` to start from")
        segments, prompts = ([segment], [prompt]) if isinstance(segment, str) else (list(segment), list(prompt))
        count = len(segments) * n
        # 1. Conditions, one row per image: the prompt's text embedding and the segment's preference prototype (for this prompt).
        where = {"device": self.device, "dtype": self.dtype}
        text = torch.stack([self.text_condition(p) for p in prompts]).to(**where).repeat_interleave(n, 0)
        pref = torch.stack([self.pref_condition(s, p) for s, p in zip(segments, prompts)]).to(**where).repeat_interleave(n, 0)
        # 2. Pure Gaussian noise in the latent space (or the latents an earlier run stopped at), and the DDIM timesteps.
        z = self._starting_noise(count, generator, latents)
        segments, prompts = [s for s in segments for _ in range(n)], [p for p in prompts for _ in range(n)]
        self.scheduler.set_timesteps(self.guidance.steps)
        for index, t in list(enumerate(self.scheduler.timesteps))[start_step:stop_step]:
            # 3. Classifier-free guided noise prediction.
            eps = self._eps(z, t, text, pref)
            # 4. Multi-gradient guidance on the decoded x0-prediction, where it acts.
            if guided(self.guidance, index):
                alpha_bar = self.scheduler.alphas_cumprod[t].to(**where)
                with torch.enable_grad():
                    eps = eps - (1 - alpha_bar).sqrt() * self._guidance_gradient(z, eps, alpha_bar, segments, prompts)
            # 5. One DDIM step (eta = 0: deterministic given the starting noise).
            z = self.scheduler.step(eps, t, z).prev_sample
        if stop_step < self.guidance.steps:
            return z
        # 6. Decode (through the codebook unless switched off).
        with torch.no_grad():
            return self.decode(z, quantize=self.guidance.quantize_output)

    def _starting_noise(self, count: int, generator: torch.Generator | list[torch.Generator] | None, latents: Tensor | None) -> Tensor:
        shape, where = self.latent_shape, {"device": self.device, "dtype": self.dtype}
        if latents is not None:
            if tuple(latents.shape) != (count, *shape):
                raise ValueError(f"latents have shape {tuple(latents.shape)}; these jobs need {(count, *shape)}")
            return latents.to(**where, copy=True)
        generators = generator if isinstance(generator, list) else [generator]
        if isinstance(generator, list) and len(generator) != count:
            raise ValueError(f"got {len(generator)} generators for {count} images; give one per image or a single one")
        if any(g is not None and g.device.type != "cpu" for g in generators):
            raise ValueError("give CPU generators (torch.Generator()): the noise is drawn on the CPU so that a seed "
                             "means the same image on every device")
        if isinstance(generator, list):
            noise = torch.cat([torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generator])
        else:
            noise = torch.randn((count, *shape), generator=generator, dtype=torch.float32)
        return noise.to(**where)
