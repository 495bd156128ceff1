"""Test doubles that stand in at the runtime's seams (see ``engine.py``)."""

from tests.fakes.engine import FakeEngine, Faults

__all__ = ["FakeEngine", "Faults"]
