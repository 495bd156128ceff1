"""A new user's first minutes: ``./scripts/demo`` as the README says, then the README's snippets.

The script runs for real (its ./.venv is this checkout's, already set up), in a temp
HOME, on a free port; its banner must give the URL, the alias and a curl line that
works, and the first curl and Python snippets of the README must work against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = [pytest.mark.mlx, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[1]


def first_block(language: str) -> str:
    """The first fenced ``language`` block of the README that is not a setup command."""
    blocks = re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    return next(block for block in blocks if "scripts/" not in block)


def _as_from_a_terminal() -> None:
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[str], subprocess.Popen[str]]]:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("the checkout has no ./.venv (./scripts/check makes it)")
    home = tmp_path_factory.mktemp("new-user")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLXD_")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
    )
    port = free_port()
    script = subprocess.Popen(
        [str(ROOT / "scripts" / "demo"), "--port", str(port)],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # As from a terminal: Ctrl-C reaches it (a shell can neither trap nor receive a
        # signal it was started with ignored, as background jobs start).
        preexec_fn=_as_from_a_terminal,
    )
    assert script.stdout is not None
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(script.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 300  # a first run may install ./.venv
    while not any("Ctrl-C stops it" in line for line in list(out)):
        assert time.monotonic() < deadline, f"no banner: {out}"
        assert script.poll() is None, f"./scripts/demo exited: {out}"
        time.sleep(0.2)
    try:
        yield port, out, script
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)  # the script and the daemon it started
            script.wait()


def test_the_demo_prints_where_which_alias_and_what_to_try(
    demo: tuple[int, list[str], subprocess.Popen[str]],
) -> None:
    port, out, _ = demo
    banner = "".join(out)
    assert f"http://127.0.0.1:{port}/v1" in banner
    assert "alias: demo" in banner
    assert f"curl http://127.0.0.1:{port}/v1/chat/completions" in banner
    # Only the alias it can serve: none from the clone's example mlxd.toml.
    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["demo"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_banners_curl_line_and_the_readmes_curl_work(
    demo: tuple[int, list[str], subprocess.Popen[str]],
) -> None:
    port, out, _ = demo
    banner = "".join(out)
    from_banner = banner[banner.index("curl ") : banner.index("Ctrl-C")].strip()
    from_readme = first_block("sh").replace("localhost:8080", f"localhost:{port}")
    for command in (from_banner, from_readme):
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        reply = json.loads(done.stdout)
        assert reply["model"] == "demo"
        assert reply["usage"]["completion_tokens"] >= 1


def test_the_readmes_first_python_snippet_works(demo: tuple[int, list[str], subprocess.Popen[str]]) -> None:
    port, _, _ = demo
    snippet = first_block("python").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    done = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_ctrl_c_stops_the_demo(demo: tuple[int, list[str], subprocess.Popen[str]]) -> None:
    port, _, script = demo
    script.send_signal(signal.SIGINT)
    assert script.wait(60) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
