"""TALOS render node: Aperture HD held on the GPU, serving jobs from the relay."""
