"""What comes back: the events of a job, OpenAI's stream events, the response bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from talos.api.v1.contract.choices import OUTPUT_FORMATS

# -- what comes back ---------------------------------------------------------------------------

PropKind = Literal["string", "integer", "number", "boolean", "base64", "object", "array"]


@dataclass(frozen=True)
class Prop:
    """One property of an event or a response body."""

    name: str
    kind: PropKind
    description: str
    optional: bool = False
    # The same value in the proto message, where it has another name there (None: not carried).
    proto: str | None = ""
    # For objects, their properties; for arrays, the properties of each item.
    props: tuple[Prop, ...] = ()
    enum: tuple[str, ...] = ()

    @property
    def proto_name(self) -> str | None:
        return self.name if self.proto == "" else self.proto


JOB_ID = Prop("job_id", "string", "The job the event belongs to.")
IMAGE = Prop("image", "integer", "Which of the request's images (0-based).")
ERROR = Prop(
    "error",
    "object",
    "Why the image failed.",
    props=(
        Prop("code", "string", "A code from the error table."),
        Prop("message", "string", "A plain-words explanation, never echoing the prompt."),
    ),
)

# The TALOS events of a job, in the order they can happen; each image of a request ends with
# exactly one `completed` or `failed`, and the job's stream ends after the last of them.
EVENTS: dict[str, tuple[Prop, ...]] = {
    "queued": (
        JOB_ID,
        IMAGE,
        Prop("position", "integer", "1-based place in the network's queue."),
        Prop("eta_seconds", "number", "Estimated seconds until the image is done."),
    ),
    "started": (JOB_ID, IMAGE),
    "progress": (
        JOB_ID,
        IMAGE,
        Prop("step", "integer", "Steps finished, 1-based."),
        Prop("total_steps", "integer", "Steps in total."),
        Prop(
            "preview_b64",
            "base64",
            "A small JPEG preview of the current latents, on some steps.",
            optional=True,
            proto="preview_jpeg",
        ),
        Prop(
            "preview_withheld",
            "boolean",
            "A preview was made but withheld: it looked like adult content and 18+ is off.",
            optional=True,
        ),
    ),
    "completed": (
        JOB_ID,
        IMAGE,
        Prop("b64_json", "base64", "The encoded image.", proto="image"),
        Prop("seed", "integer", "The seed of this image, to make it again."),
        Prop("width", "integer", "Width in pixels."),
        Prop("height", "integer", "Height in pixels."),
        Prop("output_format", "string", "png, webp or jpeg.", enum=OUTPUT_FORMATS),
        Prop("credits_charged", "integer", "Credits charged for this image."),
        Prop("balance", "integer", "Spendable credits left (allowance remaining plus balance)."),
    ),
    "failed": (
        JOB_ID,
        IMAGE,
        ERROR,
        Prop("seed", "integer", "The seed this image would have used."),
        Prop("refunded", "boolean", "Always true: the image's hold was released."),
    ),
}
TERMINAL_EVENTS = ("completed", "failed")

# What an OpenAI-format stream sends (the openai package's ImageGen*Event shapes).
OPENAI_IMAGE_COMMON: tuple[Prop, ...] = (
    Prop("b64_json", "base64", "The image, base64."),
    Prop("created_at", "integer", "Unix time of the event."),
    Prop("size", "string", "WIDTHxHEIGHT."),
    Prop("quality", "string", "The quality asked for (auto when steps were given)."),
    Prop("background", "string", "Always opaque or auto, as asked."),
    Prop("output_format", "string", "png, webp or jpeg."),
)
OPENAI_EVENTS: dict[str, tuple[Prop, ...]] = {
    "image_generation.partial_image": (
        Prop("type", "string", "image_generation.partial_image"),
        *OPENAI_IMAGE_COMMON,
        Prop("partial_image_index", "integer", "0-based index of the partial image within its image."),
    ),
    "image_generation.completed": (
        Prop("type", "string", "image_generation.completed"),
        *OPENAI_IMAGE_COMMON,
        Prop(
            "usage",
            "object",
            "Token counts as OpenAI reports them; TALOS bills per image, so they are 0.",
            props=(
                Prop("input_tokens", "integer", "0."),
                Prop("output_tokens", "integer", "0."),
                Prop("total_tokens", "integer", "0."),
                Prop(
                    "input_tokens_details",
                    "object",
                    "0s.",
                    props=(
                        Prop("image_tokens", "integer", "0."),
                        Prop("text_tokens", "integer", "0."),
                    ),
                ),
            ),
        ),
    ),
    # TALOS's own: one image of several failed and was refunded (no `error` key, on which the
    # openai package raises and drops the images still to come).
    "talos.image_failed": (
        Prop("type", "string", "talos.image_failed"),
        IMAGE,
        Prop("seed", "integer", "The seed it would have used."),
        Prop("code", "string", "A code from the error table."),
        Prop("message", "string", "Why, in plain words."),
        Prop("refunded", "boolean", "Always true."),
    ),
}

REFUND = Prop(
    "refunded",
    "array",
    "Images that failed and were refunded, with why.",
    props=(
        Prop("image", "integer", "Which image (0-based)."),
        Prop("seed", "integer", "The seed it would have used."),
        ERROR,
    ),
)
RESPONSES: dict[str, tuple[Prop, ...]] = {
    "Generation": (
        Prop("created", "integer", "Unix time the job was accepted."),
        JOB_ID,
        Prop(
            "data",
            "array",
            "The delivered images, in request order.",
            props=(
                Prop("b64_json", "base64", "The encoded image."),
                Prop("seed", "integer", "Its seed."),
                Prop("image", "integer", "Which of the request's images (0-based)."),
            ),
        ),
        REFUND,
        Prop("size", "string", "WIDTHxHEIGHT."),
        Prop("output_format", "string", "png, webp or jpeg.", enum=OUTPUT_FORMATS),
        Prop("quality", "string", "The quality asked for."),
        Prop("background", "string", "opaque or auto, as asked."),
        Prop("credits_charged", "integer", "Credits charged: the price times the delivered images."),
        Prop("balance", "integer", "Spendable credits left (allowance remaining plus balance)."),
    ),
    "JobAccepted": (JOB_ID,),
    "CancelResult": (JOB_ID, Prop("cancelled", "boolean", "True when the job was still running.")),
    "Error": (ERROR,),
}
