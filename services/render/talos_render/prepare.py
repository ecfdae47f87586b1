"""A job's preparation, off the render thread: text encoding, its own scheduler, its initial noise.

This is what ``StableDiffusionXLPipeline.__call__`` does before its loop, for one prompt, done
the same way (the pipeline's own ``encode_prompt`` and ``_get_add_time_ids``, diffusers'
``randn_tensor`` with the job's CPU generator), so a job rendered alone gives exactly what the
stock pipeline gives, and a job's initial noise never depends on which jobs it is batched with.

On CUDA it runs on its own stream and thread: the host-to-device copies it makes (token ids,
timesteps, noise) wait for that stream only, never for the UNet's.
"""

from __future__ import annotations

from typing import Any

import torch

from talos_render.jobs import Conditioning, Job


class Preparer:
    def __init__(self, pipe: Any, device: torch.device, dtype: torch.dtype) -> None:
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.projection_dim = int(pipe.text_encoder_2.config.projection_dim)

    def prepare(self, job: Job) -> None:
        """Fills the job's scheduler, generator, latents and conditioning (blocking)."""
        if self.stream is None:
            with torch.inference_mode():
                self._prepare(job)
            return
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            self._prepare(job)
            event = torch.cuda.Event()
            event.record(self.stream)
            job.ready = event

    def _prepare(self, job: Job) -> None:
        request = job.request
        pipe = self.pipe
        cfg = request.cfg
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=request.prompt,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg,
            negative_prompt=request.negative_prompt or None,
        )
        size = (request.height, request.width)
        time_ids = pipe._get_add_time_ids(
            size, (0, 0), size, dtype=embeds.dtype, text_encoder_projection_dim=self.projection_dim
        )
        if cfg:
            embeds = torch.cat([negative, embeds], dim=0)
            pooled = torch.cat([negative_pooled, pooled], dim=0)
            time_ids = torch.cat([time_ids, time_ids], dim=0)
        job.conditioning = Conditioning(
            embeds=embeds.to(self.device), pooled=pooled.to(self.device), time_ids=time_ids.to(self.device)
        )

        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(request.steps, device=self.device)
        if hasattr(scheduler, "set_begin_index"):
            # As the stock pipeline does; it also spares a device-to-host lookup of the first step.
            scheduler.set_begin_index(0)
        job.scheduler = scheduler

        from diffusers.utils.torch_utils import randn_tensor

        generator = torch.Generator("cpu").manual_seed(int(request.seed))
        scale = int(pipe.vae_scale_factor)
        shape = (1, int(pipe.unet.config.in_channels), request.height // scale, request.width // scale)
        noise = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=embeds.dtype)
        if self.device.type == "cuda":
            noise = noise.pin_memory().to(self.device, non_blocking=True)
        job.latents = noise * scheduler.init_noise_sigma
        job.generator = generator
