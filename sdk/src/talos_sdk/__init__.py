"""TALOS image generation client."""
