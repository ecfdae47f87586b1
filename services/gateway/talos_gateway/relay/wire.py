"""A job's RenderSpec as a node receives it (RenderJob), and back: the one conversion of each.

The relay sends RenderJob to a node on its own stream, and a replica hands one to another over
the peer stream; both go through :func:`render_job`.
"""

from __future__ import annotations

from talos.relay.v1 import relay_pb2
from talos_gateway.relay.contract import RenderSpec


def spec_of(job: relay_pb2.RenderJob) -> RenderSpec:
    return RenderSpec(
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        width=job.width,
        height=job.height,
        steps=job.steps,
        guidance=job.guidance,
        seed=job.seed,
        output_format=job.output_format,
        output_quality=job.output_quality,
    )


def render_job(job_id: str, spec: RenderSpec, preview_every: int = 0) -> relay_pb2.RenderJob:
    """The RenderJob a node receives for ``spec`` (the one conversion, for local and far nodes)."""
    return relay_pb2.RenderJob(
        job_id=job_id,
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        width=spec.width,
        height=spec.height,
        steps=spec.steps,
        guidance=spec.guidance,
        seed=spec.seed,
        output_format=spec.output_format,
        output_quality=spec.output_quality,
        preview_every=preview_every,
    )
