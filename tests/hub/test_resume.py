"""Interrupted pulls (killed, Ctrl-C, dropped connection) resume without fetching finished files again."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.hub.helpers import MakeRepo, MlxdEnv, sharded_model, wait_until
from tests.hub.proxy import HubProxy, Seen

pytestmark = pytest.mark.hub

BIG = "model-00002-of-00002.safetensors"


def model_files() -> dict[str, bytes]:
    files = sharded_model({"model_type": "llama"}, [256 * 1024, 3 * 1024 * 1024])
    files["tokenizer.json"] = json.dumps({"version": "1.0"}).encode()
    files["tokenizer_config.json"] = b"{}"
    return files


def partial_size(storage: Path, data: bytes) -> int:
    """Bytes of the partial blob of ``data`` (named by its LFS etag, the sha256)."""
    partial = storage / "blobs" / f"{hashlib.sha256(data).hexdigest()}.incomplete"
    return partial.stat().st_size if partial.is_file() else 0


def names(requests: list[Seen]) -> list[str]:
    return sorted(r.path.rsplit("/", 1)[-1] for r in requests)


def start_slow_pull(
    mlxd_env: MlxdEnv, hub_proxy: HubProxy, repo_id: str, big: bytes, at_least: int
) -> subprocess.Popen[str]:
    """Start a pull whose big shard trickles in; return once ``at_least`` bytes of it are on disk."""
    hub_proxy.slow_suffix, hub_proxy.slow_delay = BIG, 0.05
    process = mlxd_env.popen("models", "pull", repo_id, HF_ENDPOINT=hub_proxy.url)
    storage = mlxd_env.storage(repo_id)
    wait_until(
        lambda: partial_size(storage, big) >= at_least or process.poll() is not None,
        60,
        "part of the weights",
    )
    assert process.poll() is None, process.communicate()
    return process


def test_killed_pull_resumes_where_it_stopped(
    mlxd_env: MlxdEnv, make_hub_repo: MakeRepo, hub_proxy: HubProxy, repo_name: str
) -> None:
    files = model_files()
    repo_id = f"org/{repo_name}"
    commit = make_hub_repo("org", repo_name, files, lfs=(".safetensors",))
    process = start_slow_pull(mlxd_env, hub_proxy, repo_id, files[BIG], at_least=512 * 1024)

    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    kept = partial_size(mlxd_env.storage(repo_id), files[BIG])
    assert 512 * 1024 <= kept < len(files[BIG])
    assert names(hub_proxy.file_gets()) == sorted(files)  # each file was requested once so far
    hub_proxy.clear()
    hub_proxy.slow_suffix = None

    result = mlxd_env.run("models", "pull", repo_id, HF_ENDPOINT=hub_proxy.url)

    assert result.returncode == 0, result.stderr
    assert "5 files already complete, 1 resumed (" in result.stdout
    (resumed,) = hub_proxy.file_gets()  # finished files were not fetched again
    assert resumed.path.endswith(BIG)
    assert resumed.range_start == kept
    assert resumed.sent == len(files[BIG]) - kept
    snapshot = mlxd_env.storage(repo_id) / "snapshots" / commit
    assert hashlib.sha256((snapshot / BIG).read_bytes()).digest() == hashlib.sha256(files[BIG]).digest()
    assert partial_size(mlxd_env.storage(repo_id), files[BIG]) == 0


def test_ctrl_c_exits_130_with_one_line_and_keeps_the_partial(
    mlxd_env: MlxdEnv, make_hub_repo: MakeRepo, hub_proxy: HubProxy, repo_name: str
) -> None:
    files = model_files()
    repo_id = f"org/{repo_name}"
    make_hub_repo("org", repo_name, files, lfs=(".safetensors",))
    process = start_slow_pull(mlxd_env, hub_proxy, repo_id, files[BIG], at_least=256 * 1024)

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 130
    assert stderr.strip() == "interrupted: finished files are kept; run the same command again to resume"
    kept = partial_size(mlxd_env.storage(repo_id), files[BIG])
    assert 256 * 1024 <= kept < len(files[BIG])
    hub_proxy.clear()
    hub_proxy.slow_suffix = None
    result = mlxd_env.run("models", "pull", repo_id, HF_ENDPOINT=hub_proxy.url)
    assert result.returncode == 0, result.stderr
    assert [r.range_start for r in hub_proxy.file_gets()] == [kept]


def test_dropped_connection_resumes_in_the_same_pull(
    mlxd_env: MlxdEnv, make_hub_repo: MakeRepo, hub_proxy: HubProxy, repo_name: str
) -> None:
    files = model_files()
    repo_id = f"org/{repo_name}"
    commit = make_hub_repo("org", repo_name, files, lfs=(".safetensors",))
    hub_proxy.slow_suffix, hub_proxy.slow_delay, hub_proxy.drop_after = BIG, 0.0, 1024 * 1024

    result = mlxd_env.run("models", "pull", repo_id, HF_ENDPOINT=hub_proxy.url)

    assert result.returncode == 0, result.stderr
    first, second = hub_proxy.file_gets(BIG)
    assert (first.range_start, first.sent) == (0, 1024 * 1024)
    assert second.range_start == 1024 * 1024
    assert second.sent == len(files[BIG]) - 1024 * 1024
    assert (mlxd_env.storage(repo_id) / "snapshots" / commit / BIG).read_bytes() == files[BIG]


def test_server_without_range_support_restarts_the_file(
    mlxd_env: MlxdEnv, make_hub_repo: MakeRepo, hub_proxy: HubProxy, repo_name: str
) -> None:
    files = model_files()
    repo_id = f"org/{repo_name}"
    commit = make_hub_repo("org", repo_name, files, lfs=(".safetensors",))
    process = start_slow_pull(mlxd_env, hub_proxy, repo_id, files[BIG], at_least=256 * 1024)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)

    # olah itself (no proxy) answers a Range request with the whole file.
    result = mlxd_env.run("models", "pull", repo_id)

    assert result.returncode == 0, result.stderr
    assert "5 files already complete, 1 restarted (the server refused to resume)" in result.stdout
    assert (mlxd_env.storage(repo_id) / "snapshots" / commit / BIG).read_bytes() == files[BIG]


def test_a_second_concurrent_pull_is_refused(
    mlxd_env: MlxdEnv, make_hub_repo: MakeRepo, hub_proxy: HubProxy, repo_name: str
) -> None:
    files = model_files()
    repo_id = f"org/{repo_name}"
    make_hub_repo("org", repo_name, files, lfs=(".safetensors",))
    first = start_slow_pull(mlxd_env, hub_proxy, repo_id, files[BIG], at_least=64 * 1024)
    hub_proxy.slow_delay = 0.5  # keep the first pull busy while the second one starts

    second = mlxd_env.run("models", "pull", repo_id, HF_ENDPOINT=hub_proxy.url)
    hub_proxy.slow_suffix = None
    first.communicate(timeout=60)

    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"error: another pull of {repo_id} is running",
        "hint: wait for it to finish",
    ]
    assert first.returncode == 0
