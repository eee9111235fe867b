"""Fixtures of the reliability tests (the scenario context lives in scenarios.py)."""

from reliability.scenarios import ctx

__all__ = ["ctx"]
