"""Style presets: how the gateway turns a person's prompt into what the node renders.

The public API names the presets (:data:`talos.api.v1.contract.STYLES`); their texts live
here. Every preset is a template with a ``{prompt}`` slot plus its own negative prompt, and
every preset's negative prompt ends with one baseline anti-artifact negative. The user's
negative prompt is appended to the preset's. ``photo`` is the default and is tuned for a
real-photo look (plain camera language, lower guidance) rather than the over-processed look.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from talos.api.v1 import contract
from talos.api.v1.contract import Generation
from talos_gateway.relay.contract import RenderSpec

# Kept free of words that a prompt check could read as a minor or a nudity context, also by
# the negative-prompt inversion ("adult", "mature", "old", "clothes", "dressed" are avoided).
BASELINE_NEGATIVE = (
    "lowres, blurry, out of focus, jpeg artifacts, compression artifacts, noise, watermark, "
    "signature, text, logo, frame, border, cropped, out of frame, duplicate, deformed, "
    "disfigured, bad anatomy, bad proportions, extra limbs, extra fingers, fused fingers, "
    "missing fingers, malformed hands, poorly drawn face, asymmetric eyes"
)


@dataclass(frozen=True)
class Preset:
    id: str
    prompt_template: str
    own_negative: str

    @property
    def negative_prompt(self) -> str:
        """The preset's full negative prompt, baseline included."""
        return f"{self.own_negative}, {BASELINE_NEGATIVE}"

    def final_prompt(self, prompt: str) -> str:
        return self.prompt_template.replace("{prompt}", prompt)

    def final_negative(self, user_negative: str) -> str:
        if user_negative:
            return f"{self.negative_prompt}, {user_negative}"
        return self.negative_prompt


PRESETS: dict[str, Preset] = {
    style.id: style
    for style in (
        Preset(
            id="photo",
            # Camera and light words a photographer would write; no "masterpiece, 8k, ultra
            # detailed" stacking, which pushes SDXL models to the glossy over-processed look.
            prompt_template=(
                "candid photograph of {prompt}, natural light, shot on a 35mm lens, "
                "realistic textures, true-to-life colors, subtle film grain, sharp focus"
            ),
            own_negative=(
                "illustration, painting, drawing, sketch, cartoon, anime, cgi, 3d render, "
                "plastic look, airbrushed, waxy, oversaturated, over-sharpened, hdr, overprocessed, "
                "oversmoothed, glossy, artificial lighting"
            ),
        ),
        Preset(
            id="cinematic",
            prompt_template=(
                "cinematic film still of {prompt}, anamorphic lens, shallow depth of field, "
                "dramatic lighting, color graded, widescreen composition, film grain"
            ),
            own_negative="flat lighting, snapshot, amateur, cartoon, anime, illustration, oversaturated",
        ),
        Preset(
            id="anime",
            prompt_template=(
                "anime illustration of {prompt}, clean line art, cel shading, vibrant colors, "
                "detailed background, key visual"
            ),
            own_negative="photo, photorealistic, realistic, 3d render, muddy colors, sketchy lines",
        ),
        Preset(
            id="digital-art",
            prompt_template=(
                "digital painting of {prompt}, concept art, painterly brushwork, rich colors, "
                "dramatic composition, highly detailed"
            ),
            own_negative="photo, photorealistic, flat colors, amateur, muddy colors",
        ),
        Preset(
            id="3d",
            prompt_template=(
                "3d render of {prompt}, octane render, global illumination, soft shadows, "
                "physically based materials, studio lighting, high detail"
            ),
            own_negative="photo, painting, drawing, sketch, flat shading, low poly, grainy",
        ),
    )
}
# Every preset the contract names has its texts here, and nothing else.
assert set(PRESETS) == set(contract.STYLE_BY_ID), "styles.PRESETS and contract.STYLES disagree"


def style_texts() -> dict[str, tuple[str, str]]:
    """Each preset's template and full negative prompt, as ``/v1/options`` shows them."""
    return {preset.id: (preset.prompt_template, preset.negative_prompt) for preset in PRESETS.values()}


def random_seed() -> int:
    return secrets.randbelow(contract.SEED_MAX + 1)


def render_spec(generation: Generation, seed: int) -> RenderSpec:
    """One image of a request as a node renders it: the preset applied, the seed chosen."""
    preset = PRESETS[generation.style]
    return RenderSpec(
        prompt=preset.final_prompt(generation.prompt),
        negative_prompt=preset.final_negative(generation.negative_prompt),
        width=generation.width,
        height=generation.height,
        steps=generation.steps,
        guidance=generation.guidance,
        seed=seed,
        output_format=generation.output_format,
        # OpenAI's output_compression is the encoder's quality; 0 on the wire means the default.
        output_quality=max(1, generation.output_compression)
        if generation.output_compression is not None
        else 0,
    )
