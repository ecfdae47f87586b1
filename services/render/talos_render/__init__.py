"""TALOS render node: Aperture HD held on the GPU, serving jobs from the relay."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("talos-render")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
