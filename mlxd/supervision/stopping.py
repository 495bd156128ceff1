"""How long stopping the daemon takes, derived from its one setting, ``[server] drain_timeout``.

A stop runs in bounded phases, so whoever waits for it (``mlxd stop``, launchd's
``ExitTimeOut``, systemd's ``TimeoutStopSec``) can wait for all of them and never kill a
daemon that is still ending its streams properly::

    SIGTERM ── drain_timeout ──▶ every sequence still running ends with an error event
            ── CLOSE_GRACE_S ──▶ the server closes what is left of the connections
            ── WORKER_STOP_S ──▶ the MLX worker thread has finished its step and stopped
            ── EXIT_MARGIN_S ──▶ the supervisor's SIGKILL (``stop_timeout_s``)

The daemon takes its phases from here and the CLI its timeout, so the two cannot drift.
"""

from __future__ import annotations

import math

#: Seconds uvicorn waits for connections to close once every response has ended (they
#: normally close in milliseconds; a client that stopped reading holds its stream).
CLOSE_GRACE_S = 2
#: Seconds the MLX worker gets to finish the step it is in (a prefill chunk) and stop.
WORKER_STOP_S = 5.0
#: Seconds for the rest of the exit (threads, logs, the interpreter) before a supervisor
#: may conclude the daemon hangs.
EXIT_MARGIN_S = 3.0


def stop_timeout_s(drain_timeout_s: float) -> int:
    """How long a graceful stop may take before a supervisor kills the daemon (whole seconds)."""
    return math.ceil(drain_timeout_s + CLOSE_GRACE_S + WORKER_STOP_S + EXIT_MARGIN_S)
