"""The SDK's version, read by setuptools too (sdk/pyproject.toml), so it is stated once."""

__version__ = "0.2.0"
