"""Supervision records shared by the CLI and the daemon (stdlib plus the platform paths).

Three small files live in the state directory:

- ``mlxd.pid`` (``processes``): the pid of a daemon started as a detached process by
  ``mlxd start``; stale pids are recognised and removed.
- ``run.json`` (``run_record``): the running daemon's record of itself (pid, URL,
  config file), written once it listens: how the CLI finds it.
- ``breaker.json`` (``breaker``): the crash-loop breaker, per config file.
"""

from __future__ import annotations

from mlxd.supervision.breaker import (
    BREAKER_FILENAME,
    BREAKER_LIMIT,
    BREAKER_WINDOW_S,
    Failure,
    breaker_file,
    clear_breaker,
    config_key,
    gave_up_reason,
    last_failure,
    read_breaker,
    record_gave_up,
    record_start_failure,
    should_give_up,
)
from mlxd.supervision.processes import (
    PID_FILENAME,
    is_alive,
    is_mlxd_process,
    listening_pid,
    live_daemon_pid,
    looks_like_mlxd,
    pid_file,
    process_command,
    read_pid_file,
    remove_pid_file,
    write_pid_file,
)
from mlxd.supervision.run_record import (
    RUN_RECORD_FILENAME,
    RunRecord,
    connect_url,
    read_run_record,
    remove_run_record,
    run_record_file,
    write_run_record,
)

__all__ = [
    "BREAKER_FILENAME",
    "BREAKER_LIMIT",
    "BREAKER_WINDOW_S",
    "PID_FILENAME",
    "RUN_RECORD_FILENAME",
    "Failure",
    "RunRecord",
    "breaker_file",
    "clear_breaker",
    "config_key",
    "connect_url",
    "gave_up_reason",
    "is_alive",
    "is_mlxd_process",
    "last_failure",
    "listening_pid",
    "live_daemon_pid",
    "looks_like_mlxd",
    "pid_file",
    "process_command",
    "read_breaker",
    "read_pid_file",
    "read_run_record",
    "record_gave_up",
    "record_start_failure",
    "remove_pid_file",
    "remove_run_record",
    "run_record_file",
    "should_give_up",
    "write_pid_file",
    "write_run_record",
]
