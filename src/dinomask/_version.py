"""The one version string: the wheel's metadata, ``dinomask --version`` and ``/v1/health`` read it."""

__version__ = "0.2.0"
