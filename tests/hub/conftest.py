"""A real local Hub for the pull/list/rm tests: olah serving git repositories on loopback.

``hub_server`` starts olah once per session; ``make_hub_repo`` commits files into its
mirrors directory (weights can be stored as git-LFS objects, as on the real Hub);
``hub_proxy`` sits in front of olah to count requests, honour Range requests and slow or
cut a download so a test can interrupt it; ``mlxd_env`` runs the CLI as a subprocess with
HF_* and HOME/XDG_* pointing into the test's temp dir.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from itertools import count
from pathlib import Path

import pytest

from tests.hub.helpers import HubServer, MakeRepo, MlxdEnv, answers, free_port, git, wait_until
from tests.hub.proxy import HubProxy, proxy_handler

OLAH = Path(sys.executable).with_name("olah-cli")
_names = count()


@pytest.fixture(scope="session")
def tiny_model_files(tiny_model_dir: Path) -> dict[str, bytes]:
    """The files of the suite's tiny MLX model (real llama weights and tokenizer), by name."""
    return {p.name: p.read_bytes() for p in sorted(tiny_model_dir.iterdir()) if p.is_file()}


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """Start olah (offline mode, local git mirrors) once for the whole session."""
    root = tmp_path_factory.mktemp("olah")
    mirrors, repos = root / "mirrors", root / "repos"
    (mirrors / "models").mkdir(parents=True)
    repos.mkdir()
    port = free_port()
    (root / "olah.toml").write_text(
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f"mirrors-path = [{json.dumps(str(mirrors))}]\n"
        f"repos-path = {json.dumps(str(repos))}\n"
        "[accessibility]\n"
        "offline = true\n"
    )
    url = f"http://127.0.0.1:{port}"
    with (root / "olah.log").open("wb") as log:
        # olah writes its logs under the working directory: keep them in the temp dir.
        process = subprocess.Popen(
            [str(OLAH), "-c", "olah.toml"], cwd=root, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            probe = f"{url}/api/models/x/y/revision/main"
            wait_until(lambda: process.poll() is None and answers(probe), 60, "olah to answer")
            yield HubServer(url, mirrors, process)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def make_hub_repo(hub_server: HubServer) -> MakeRepo:
    """Create ``org/name`` on the local Hub from ``{path: bytes}``; return its commit on ``main``.

    Files whose names end with one of ``lfs`` are stored as git-LFS objects, as the Hub
    stores weights. ``tags`` adds tags at that commit. Called again for the same repo, it
    commits the files on top (a new ``main``).
    """

    def make(
        org: str,
        name: str,
        files: Mapping[str, bytes],
        *,
        lfs: tuple[str, ...] = (),
        tags: tuple[str, ...] = (),
    ) -> str:
        repo = hub_server.mirrors / "models" / org / name
        if not repo.exists():
            repo.mkdir(parents=True)
            git(repo, "init", "-q", "-b", "main")
        for path, data in files.items():
            dest = repo / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if lfs and path.endswith(lfs):
                oid = hashlib.sha256(data).hexdigest()
                obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
                obj.parent.mkdir(parents=True, exist_ok=True)
                obj.write_bytes(data)
                dest.write_text(
                    f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n"
                )
            else:
                dest.write_bytes(data)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"add {name}")
        for tag in tags:
            git(repo, "tag", tag)
        return git(repo, "rev-parse", "HEAD")

    return make


@pytest.fixture
def repo_name(request: pytest.FixtureRequest) -> str:
    """A repo name unique in the session, so tests never see each other's repos."""
    return f"{request.node.originalname.removeprefix('test_')[:50]}-{next(_names)}"


@pytest.fixture
def hub_proxy(hub_server: HubServer) -> Iterator[HubProxy]:
    """A proxy in front of olah that counts requests and honours ``Range`` like the real Hub."""
    proxy = HubProxy(url="", upstream=hub_server.url)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), proxy_handler(proxy))
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield proxy
    server.shutdown()
    server.server_close()


@pytest.fixture
def mlxd_env(tmp_path: Path, hub_server: HubServer) -> MlxdEnv:
    """Env for the CLI: the local Hub, a fresh HF cache, and HOME/XDG dirs inside tmp_path."""
    dropped = ("HF_", "HUGGINGFACE_", "MLXD_", "XDG_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped) and k not in {"TRANSFORMERS_OFFLINE", "COLUMNS"}
    }
    for name in ("home", "config", "cache", "data", "state", "hf-home", "hub-cache"):
        (tmp_path / name).mkdir()
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_CACHE=str(tmp_path / "hub-cache"),
        HF_ENDPOINT=hub_server.url,
        HF_HUB_DISABLE_TELEMETRY="1",
        # No daemon of this test listens here: "loaded?" must come out false, not from a stray daemon.
        MLXD_SERVER__PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    return MlxdEnv(tmp_path, env)
