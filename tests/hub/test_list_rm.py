"""``mlxd models list`` and ``mlxd models rm`` against a cache filled by real pulls."""

from __future__ import annotations

import http.server
import json
import os
import pty
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mlxd.protocol.admin import ConfigStatus, DaemonStatus, ModelStatus
from tests.hub.helpers import MakeRepo, MlxdEnv

pytestmark = pytest.mark.hub


def listing(mlxd_env: MlxdEnv, config: Path) -> dict[str, dict[str, Any]]:
    result = mlxd_env.run("models", "list", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    keys = {
        "alias",
        "source",
        "local",
        "revision",
        "adapter",
        "downloaded",
        "size_bytes",
        "loaded",
        "revisions",
        "problem",
        "capabilities",
    }
    assert all(set(row) == keys for row in rows)  # every object has the same, stable keys
    return {row["alias"] or row["source"]: row for row in rows}


LOADED_TINY = DaemonStatus(
    version="0",
    pid=1,
    uptime_s=1.0,
    draining=False,
    config=ConfigStatus(path=None, generation=1, last_error=None),
    worker="running",
    models=[
        ModelStatus(alias="tiny", source="x", state="loaded", memory_bytes=1, active_sequences=0, idle_s=0)
    ],
    active_sequences=0,
    queue_depth=0,
)


@contextmanager
def status_server(port: int) -> Iterator[None]:
    """Answer GET /mlxd/status on ``port`` as a daemon with alias ``tiny`` loaded would.

    A stand-in for the daemon: ``models list`` only reads this one endpoint, in the wire
    type the daemon itself encodes.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = msgspec.json.encode(LOADED_TINY)
            self.send_response(200 if self.path == "/mlxd/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def setup(
    mlxd_env: MlxdEnv,
    make_hub_repo: MakeRepo,
    tiny_model_files: dict[str, bytes],
    repo_name: str,
    tmp_path: Path,
) -> tuple[Path, str, str]:
    """Config with four aliases; ``org/<name>-a`` pulled for one, ``org/<name>-b`` pulled but not configured."""
    make_hub_repo("org", f"{repo_name}-a", tiny_model_files)
    make_hub_repo("org", f"{repo_name}-b", tiny_model_files)
    local = tmp_path / "local-model"
    local.mkdir()
    for name, data in tiny_model_files.items():
        (local / name).write_bytes(data)
    (tmp_path / "adapters" / "sql").mkdir(parents=True)
    (tmp_path / "adapters" / "sql" / "adapter_config.json").write_text("{}")
    config = tmp_path / "mlxd.toml"
    config.write_text(
        f'[models.tiny]\nmodel = "org/{repo_name}-a"\n\n'
        f'[models.tiny-sql]\nmodel = "org/{repo_name}-a"\nadapter = "adapters/sql"\n\n'
        '[models.never]\nmodel = "org/never-pulled"\n\n'
        '[models.mine]\nmodel = "./local-model"\n'
    )
    for repo in (f"org/{repo_name}-a", f"org/{repo_name}-b"):
        assert mlxd_env.run("models", "pull", repo).returncode == 0
    return config, f"org/{repo_name}-a", f"org/{repo_name}-b"


def test_list_json_table_and_loaded(
    mlxd_env: MlxdEnv, setup: tuple[Path, str, str], tiny_model_files: dict[str, bytes]
) -> None:
    config, repo_a, repo_b = setup
    size = sum(len(data) for data in tiny_model_files.values())

    rows = listing(mlxd_env, config)
    table = mlxd_env.run("models", "list", "--config", str(config), COLUMNS="200")
    with status_server(int(mlxd_env.env["MLXD_SERVER__PORT"])):
        with_daemon = listing(mlxd_env, config)

    assert list(rows) == ["tiny", "tiny-sql", "never", "mine", repo_b]
    assert rows["tiny"] == {
        "alias": "tiny",
        "source": repo_a,
        "local": False,
        "revision": None,
        "adapter": None,
        "downloaded": True,
        "size_bytes": size,
        "loaded": False,  # no daemon runs
        "revisions": ["main"],
        "problem": None,
        "capabilities": [],
    }
    assert rows["tiny-sql"]["adapter"] == "adapters/sql"
    assert rows["tiny-sql"]["downloaded"] is True
    assert (rows["never"]["downloaded"], rows["never"]["size_bytes"]) == (False, None)
    assert (rows["mine"]["local"], rows["mine"]["downloaded"], rows["mine"]["size_bytes"]) == (
        True,
        True,
        size,
    )
    assert rows[repo_b]["alias"] is None
    assert (rows[repo_b]["downloaded"], rows[repo_b]["size_bytes"], rows[repo_b]["revisions"]) == (
        True,
        size,
        ["main"],
    )
    assert {alias for alias, row in with_daemon.items() if row["loaded"]} == {"tiny"}
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == [
        "ALIAS",
        "SOURCE",
        "REVISION",
        "ADAPTER",
        "DOWNLOADED",
        "SIZE",
        "LOADED",
        "CAPABILITIES",
    ]
    assert lines[0].split()[:5] == ["tiny", repo_a, "main", "-", "yes"]
    assert lines[2].split()[:5] == ["never", "org/never-pulled", "main", "-", "no"]
    assert lines[4].split()[:5] == ["-", repo_b, "main", "-", "yes"]


def test_rm_asks_first(mlxd_env: MlxdEnv, setup: tuple[Path, str, str]) -> None:
    config, repo_a, _ = setup
    argv = mlxd_env.command("models", "rm", "tiny", "--config", str(config))

    def rm_on_a_terminal(answer: str) -> subprocess.CompletedProcess[str]:
        primary, secondary = pty.openpty()
        os.write(primary, f"{answer}\n".encode())
        try:
            return subprocess.run(
                argv,
                env=mlxd_env.env,
                cwd=mlxd_env.root,
                stdin=secondary,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            os.close(primary)
            os.close(secondary)

    no_tty = subprocess.run(
        argv,
        env=mlxd_env.env,
        cwd=mlxd_env.root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_tty.returncode == 1
    assert no_tty.stderr.splitlines() == [
        f"error: not deleting {repo_a} without confirmation",
        "hint: pass --yes",
    ]
    assert mlxd_env.storage(repo_a).is_dir()

    declined = rm_on_a_terminal("n")
    assert f"delete {repo_a} (every revision, " in declined.stdout
    assert declined.returncode == 1
    assert mlxd_env.storage(repo_a).is_dir()

    accepted = rm_on_a_terminal("y")
    assert accepted.returncode == 0, accepted.stderr
    assert not mlxd_env.storage(repo_a).exists()


def test_rm_yes_then_list(mlxd_env: MlxdEnv, setup: tuple[Path, str, str]) -> None:
    config, repo_a, repo_b = setup

    by_repo = mlxd_env.run("models", "rm", repo_b, "--yes", "--config", str(config))
    by_alias = mlxd_env.run("models", "rm", "tiny", "--yes", "--config", str(config))
    again = mlxd_env.run("models", "rm", "tiny", "--yes", "--config", str(config))
    local = mlxd_env.run("models", "rm", "mine", "--yes", "--config", str(config))

    assert by_repo.returncode == 0, by_repo.stderr
    assert by_repo.stdout.startswith(f"deleted {repo_b} (every revision), freed ")
    assert by_alias.returncode == 0, by_alias.stderr
    assert not mlxd_env.storage(repo_a).exists()
    assert not mlxd_env.storage(repo_b).exists()
    assert again.returncode == 1
    assert again.stderr.splitlines()[0] == f"error: {repo_a} is not in the cache"
    assert local.returncode == 1
    assert local.stderr.splitlines()[0] == "error: mine uses a local directory; mlxd does not delete it"
    rows = listing(mlxd_env, config)
    assert repo_b not in rows
    assert rows["tiny"]["downloaded"] is False
    assert (config.parent / "local-model" / "config.json").is_file()


def test_rm_one_revision_keeps_shared_blobs(
    mlxd_env: MlxdEnv,
    make_hub_repo: MakeRepo,
    tiny_model_files: dict[str, bytes],
    repo_name: str,
    tmp_path: Path,
) -> None:
    repo = f"org/{repo_name}"
    old = make_hub_repo("org", repo_name, tiny_model_files, tags=("v1",))
    config_v2 = {**json.loads(tiny_model_files["config.json"]), "rope_theta": 500000.0}
    new = make_hub_repo("org", repo_name, {"config.json": json.dumps(config_v2).encode()})
    config = tmp_path / "mlxd.toml"
    config.write_text(f'[models.tiny]\nmodel = "{repo}"\n')
    assert mlxd_env.run("models", "pull", repo, "--revision", "v1").returncode == 0
    assert mlxd_env.run("models", "pull", repo).returncode == 0
    assert listing(mlxd_env, config)["tiny"]["revisions"] == ["main", "v1"]

    result = mlxd_env.run("models", "rm", repo, "--revision", "v1", "--yes", "--config", str(config))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"deleted {repo} ({old[:12]}), freed ")
    assert mlxd_env.snapshot_files(repo, old) == set()
    assert mlxd_env.snapshot_files(repo, new) == set(tiny_model_files)  # shared weights kept
    row = listing(mlxd_env, config)["tiny"]
    assert (row["downloaded"], row["revisions"]) == (True, ["main"])
