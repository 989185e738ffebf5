"""Step 3 (METHOD.md 3.1-3.5): the VQ latent space, the mapping W, the jointly conditioned latent diffusion model, guided sampling.

    vq.py              3.1   diffusers VQModel: train on `train` images or load a local checkpoint
    conditioning.py    3.2   W: Step 1 image space -> text space, so preference and text decouple; 3.4 the prototype
    unet.py            3.3   the denoiser eps(z_t, t, s, W(e)) and its noise scheduler (diffusers)
    train_diffusion.py 3.3   eps-prediction training, a task of the training core: condition dropout, EMA
    sampling.py        3.5   the guided sampler: DDIM, classifier-free guidance, fused preference and text gradients
    assemble.py              the sampler wired to the trained models on disk
    data.py                  the stages' inputs: split pixels, latents, caption and preference conditions
"""
