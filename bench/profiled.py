"""``python -m bench.profiled OUT -- mlxd serve ARGS``: mlxd with a sampling profiler inside.

A thread samples every other thread's Python stack (``sys._current_frames``) at a fixed
rate and, when the daemon exits, writes the counts as folded stacks (``thread;frame;…
count`` per line, the format flame-graph tools read) to OUT. It needs no ptrace and no
extra package, so it runs on any machine MLX runs on (a lent GPU included). Beside the
stacks it writes the daemon's timeline (``bench.timeline``: when each request reached each
stage, what each decode step cost) as ``OUT`` with the suffix ``.timeline.json``; with
``BENCH_SAMPLE_HZ=0`` in its environment it writes the timeline alone, without sampling. A thread
blocked in C (waiting on the accelerator in ``mx.eval``, on a socket, on a lock) shows
its last Python frame: the profile says where each thread is, not only where it computes.
"""

from __future__ import annotations

import collections
import math
import os
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from bench.timeline import Timeline

#: Samples a second (``0``: none, the timeline alone costs next to nothing).
RATE_VARIABLE = "BENCH_SAMPLE_HZ"


class StackSampler(threading.Thread):
    """Counts the stacks of every other thread, ``rate`` times a second."""

    def __init__(self, rate: float = 500.0) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.interval = 1.0 / rate if rate > 0 else math.inf
        self.counts: collections.Counter[str] = collections.Counter()
        self._done = threading.Event()

    def run(self) -> None:
        me = threading.get_ident()
        while not self._done.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident != me:
                    self.counts[_fold(names.get(ident, str(ident)), frame)] += 1

    def stop(self, out: Path) -> None:
        """Stop sampling and write the folded stacks, most frequent first."""
        self._done.set()
        if self.is_alive():
            self.join(2)
        lines = [f"{stack} {count}" for stack, count in self.counts.most_common()]
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _fold(thread: str, frame: FrameType | None) -> str:
    frames = []
    while frame is not None:
        code = frame.f_code
        frames.append(f"{code.co_qualname} ({Path(code.co_filename).name}:{frame.f_lineno})")
        frame = frame.f_back
    return ";".join([thread, *reversed(frames)])


def main() -> None:
    """Run ``mlxd`` with the given arguments under the sampler."""
    out, separator, *argv = sys.argv[1:]
    if separator != "--" or not argv or argv[0] != "mlxd":
        raise SystemExit("usage: python -m bench.profiled OUT -- mlxd serve [ARGS]")
    from mlxd.cli.app import app

    timeline = Timeline()
    timeline.install()
    sampler = StackSampler(float(os.environ.get(RATE_VARIABLE) or 500))
    if math.isfinite(sampler.interval):  # rate 0: the timeline alone
        sampler.start()
    started = time.perf_counter()
    try:
        app(argv[1:], prog_name="mlxd")
    finally:
        sampler.stop(Path(out))
        timeline.write(Path(out).with_suffix(".timeline.json"))
        print(f"profiled {time.perf_counter() - started:.1f}s into {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
