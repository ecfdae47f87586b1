"""The render node's batching and acceleration settings, and their start-up checks."""

from __future__ import annotations

import pytest

from talos_common.settings import load
from talos_render import config
from talos_render.acceleration import Acceleration
from talos_render.config import PREFIX, Settings


def settings(**env: str) -> Settings:
    return load(Settings, PREFIX, environ={f"{PREFIX}{k}": v for k, v in env.items()})


def test_concurrency_follows_the_device_unless_set() -> None:
    assert config.concurrency(settings(), "cpu") == 1
    assert config.concurrency(settings(), "cuda") == 8
    assert config.concurrency(settings(MAX_BATCH="4"), "cuda") == 4
    assert config.concurrency(settings(CONCURRENCY="3"), "cpu") == 3
    assert config.concurrency(settings(CONCURRENCY="12", MAX_BATCH="4"), "cuda") == 12


def test_acceleration_comes_from_the_settings() -> None:
    assert Acceleration.from_settings(settings()) == Acceleration(
        compile=None, compile_mode="default", cuda_graphs=True, attention="auto", fp8=False
    )
    chosen = Acceleration.from_settings(
        settings(COMPILE="off", CUDA_GRAPHS="false", ATTENTION="cuDNN", FP8="true")
    )
    assert (chosen.compile, chosen.cuda_graphs, chosen.attention, chosen.fp8) == (False, False, "cudnn", True)
    assert Acceleration.from_settings(settings(COMPILE="on")).compile is True


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"COMPILE": "sometimes"}, "TALOS_RENDER_COMPILE="),
        ({"COMPILE_MODE": "reduce-overhead"}, "TALOS_RENDER_COMPILE_MODE="),
        ({"COMPILE_MODE": "max-autotune"}, "TALOS_RENDER_COMPILE_MODE="),
        ({"ATTENTION": "fastest"}, "TALOS_RENDER_ATTENTION="),
        ({"MAX_BATCH": "0"}, "TALOS_RENDER_MAX_BATCH="),
        ({"BATCH_WINDOW_MS": "-1"}, "TALOS_RENDER_BATCH_WINDOW_MS="),
        ({"SIZES": "1024"}, "TALOS_RENDER_SIZES"),
    ],
)
def test_bad_choices_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        config.check(settings(**env))
    config.check(settings())  # the defaults pass
