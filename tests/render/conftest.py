"""Render-node fixtures: the built-in test model built once per session, on the CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from talos_render import loading, tinymodel
from talos_render.config import Settings
from talos_render.engine import Engine


@pytest.fixture(scope="session")
def render_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding the built-in model (built once; nodes started by tests reuse it)."""
    data_dir = tmp_path_factory.mktemp("render-data")
    tinymodel.cached(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def tiny_model_dir(render_data_dir: Path) -> Path:
    return tinymodel.cached(render_data_dir)


@pytest.fixture(scope="session")
def loaded(render_data_dir: Path) -> loading.LoadedModel:
    # cpu_threads defaults to 1: on this shared machine two OpenMP threads are far slower.
    return loading.load(Settings(model="builtin", data_dir=render_data_dir, device="cpu"))


@pytest.fixture(scope="session")
def engine(loaded: loading.LoadedModel) -> Iterator[Engine]:
    engine = Engine(loaded, preview_size=64)
    yield engine
    engine.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # diffusers' schedulers call np.array() on tensors, which numpy 2 flags; not ours to fix.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"))
