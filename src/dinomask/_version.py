"""The one version string: the wheel's metadata, ``dinomask --version`` and ``/v1/health`` read it."""

__version__ = "0.3.0.dev0"
