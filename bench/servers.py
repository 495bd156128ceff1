"""Start and stop the servers under test as subprocesses on free loopback ports.

Each server gets its own work directory: config file, log file, HOME and a Hugging
Face cache that stays empty (``HF_HUB_OFFLINE=1``; the model is a local directory).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"
#: mlxd's engine settings for the benchmark; mlx_lm.server gets the same numbers.
MAX_BATCH_SIZE = 64
PREFILL_BATCH_SIZE = 8
PREFILL_STEP_SIZE = 256


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (``/proc`` on Linux, ``ps`` elsewhere)."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def _stat_cpu_seconds(stat: Path) -> float:
    """User plus system CPU time in a ``/proc`` ``stat`` file (of a process or of one thread)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int, tid: int) -> float | None:
    """CPU time of one thread of a process (``None`` without ``/proc``)."""
    stat = Path(f"/proc/{pid}/task/{tid}/stat")
    return _stat_cpu_seconds(stat) if stat.exists() else None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, all threads (``/proc``, else ``ps``)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        return _stat_cpu_seconds(stat)
    out = subprocess.run(["ps", "-o", "time=", "-p", str(pid)], capture_output=True, text=True, check=True)
    days, _, clock = out.stdout.strip().rpartition("-")
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds + 86400 * int(days or 0)


@dataclass
class ServerProcess:
    """A running server: its process, base URL and log file."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    launched: float
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kb(self) -> int:
        """The server process's resident memory in KiB."""
        return rss_kb(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for error messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout: float = 120.0) -> float:
        """Poll ``GET /health`` until it answers 200; return the seconds since launch."""
        deadline = self.launched + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.get("/health").status_code == 200:
                        self.startup_s = time.perf_counter() - self.launched
                        return self.startup_s
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
        raise RuntimeError(f"{self.name} was not healthy after {timeout:.0f}s:\n{self.log_tail()}")

    def decode_steps(self) -> float:
        """Decode steps so far from mlxd's ``/mlxd/status`` (NaN for a server without it)."""
        try:
            status = httpx.get(f"{self.url}/mlxd/status", timeout=5.0).json()
            return float(status["batches"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return float("nan")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (both servers drain or exit on it), then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


#: The checkout, so a server process can import ``bench`` (the profiler) from its own folder.
REPO = Path(__file__).resolve().parent.parent


def _environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    path = os.environ.get("PYTHONPATH")
    env.update(
        PYTHONPATH=f"{REPO}{os.pathsep}{path}" if path else str(REPO),
        HOME=str(workdir),
        XDG_CONFIG_HOME=str(workdir / "config"),
        XDG_DATA_HOME=str(workdir / "data"),
        XDG_STATE_HOME=str(workdir / "state"),
        XDG_CACHE_HOME=str(workdir / "cache"),
        HF_HOME=str(workdir / "hf"),
        HF_HUB_CACHE=str(workdir / "hf" / "hub"),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def launch(name: str, argv: list[str], workdir: Path, port: int) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        launched = time.perf_counter()
        process = subprocess.Popen(
            argv, cwd=workdir, env=_environment(workdir), stdout=log, stderr=subprocess.STDOUT
        )
    return ServerProcess(name, process, f"http://{HOST}:{port}", log_path, launched)


def toml_value(value: int | str) -> str:
    """A TOML integer or basic string (JSON's string escapes are valid TOML)."""
    return str(value) if isinstance(value, int) else json.dumps(value)


def model_table(alias: str, model_dir: Path, *, adapter: Path | None = None, default: bool = False) -> str:
    """A ``[models.<alias>]`` table for a local model, maybe with a LoRA adapter."""
    lines = [f"[models.{alias}]", f"model = {toml_value(str(model_dir))}"]
    if adapter is not None:
        lines.append(f"adapter = {toml_value(str(adapter))}")
    if default:
        lines.append("default = true")
    return "\n".join(lines) + "\n"


def mlxd_config(models: str, port: int | str = "{port}", **runtime: int | str) -> str:
    """The benchmark's mlxd config: greedy, batches of up to 64, models never unloaded.

    ``runtime`` adds or overrides ``[runtime]`` keys; ``models`` holds the model tables.
    """
    settings: dict[str, int | str] = {
        "max_batch_size": MAX_BATCH_SIZE,
        "max_queue": 256,
        "keep_alive": "forever",
        "prefill_step_size": PREFILL_STEP_SIZE,
        **runtime,
    }
    lines = ["[server]", f"port = {port}", "", "[runtime]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    lines += ["", "[defaults]", "temperature = 0.0", ""]
    return "\n".join(lines) + "\n" + models


def start_mlxd(
    model_dir: Path, workdir: Path, *, profile: Path | None = None, **runtime: int | str
) -> ServerProcess:
    """``python -m mlxd serve`` on one default model; the model loads on first use."""
    config = mlxd_config(model_table("bench", model_dir, default=True), **runtime)
    return start_mlxd_with(config, workdir, profile=profile)


def start_mlxd_with(config: str, workdir: Path, *, profile: Path | None = None) -> ServerProcess:
    """``mlxd serve`` with a config of the caller's; ``{port}`` in it becomes a free port.

    With ``profile``, mlxd runs under ``bench.profiled``, which writes its folded stacks
    there when the daemon stops.
    """
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "mlxd.toml"
    path.write_text(config.replace("{port}", str(port)), encoding="utf-8")
    argv = ["mlxd", "serve", "--config", str(path)]
    if profile is None:
        return launch("mlxd", [sys.executable, "-m", *argv], workdir, port)
    return launch("mlxd", [sys.executable, "-m", "bench.profiled", str(profile), "--", *argv], workdir, port)


def start_mlx_lm(model_dir: Path, workdir: Path) -> ServerProcess:
    """``mlx_lm.server`` on the same model, with mlxd's batch and prefill settings."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "mlx_lm",
        "server",
        "--model",
        str(model_dir),
        "--host",
        HOST,
        "--port",
        str(port),
        "--temp",
        "0",
        "--decode-concurrency",
        str(MAX_BATCH_SIZE),
        "--prompt-concurrency",
        str(PREFILL_BATCH_SIZE),
        "--prefill-step-size",
        str(PREFILL_STEP_SIZE),
    ]
    return launch("mlx_lm.server", argv, workdir, port)


MLX_LM_FLAGS = (
    f"--temp 0 --decode-concurrency {MAX_BATCH_SIZE} --prompt-concurrency {PREFILL_BATCH_SIZE} "
    f"--prefill-step-size {PREFILL_STEP_SIZE}"
)
