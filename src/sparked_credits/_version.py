"""The version, written once: hatch reads it for the package metadata (``dynamic``), and
``sparked_credits.__version__`` imports it."""

from __future__ import annotations

__version__ = "0.1.0"
