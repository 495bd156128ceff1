"""The launcher's own care for the machine: ``mlx.launch`` yields the CPU to the ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlxd.cluster.launcher import yield_cpu

#: A process with a second thread, as ``mlx.launch`` has one per rank; it says when both run.
TWO_THREADS = (
    "import threading, time, sys; threading.Thread(target=time.sleep, args=(60,), daemon=True).start();"
    " print('up', flush=True); time.sleep(60)"
)


def _threads(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(task.name) for task in tasks.iterdir()] if tasks.is_dir() else [pid]


def test_mlx_launch_gets_the_lowest_priority_in_every_thread_and_its_caller_keeps_its_own() -> None:
    process = subprocess.Popen([sys.executable, "-c", TWO_THREADS], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "up\n"
        threads = _threads(process.pid)
        assert all(os.getpriority(os.PRIO_PROCESS, t) < 19 for t in threads)
        yield_cpu(process.pid)
        assert [os.getpriority(os.PRIO_PROCESS, t) for t in threads] == [19] * len(threads)
        assert os.getpriority(os.PRIO_PROCESS, 0) < 19
    finally:
        process.kill()
        process.wait()
    yield_cpu(process.pid)  # gone already: nothing to do, no error
