"""Shared building blocks of the TALOS services."""
