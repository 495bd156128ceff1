"""Unique ids for requests and responses, without a system call per id.

A random per-process prefix and a counter: unique within the daemon's lifetime and
across restarts, and not secret (nothing authenticates with them).
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(8).hex()
_NEXT = itertools.count(1).__next__


def new_id() -> str:
    """32 hex characters, the shape of a uuid4's hex."""
    return f"{_PREFIX}{_NEXT():016x}"
