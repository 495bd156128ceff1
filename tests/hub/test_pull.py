"""``mlxd models pull`` against a real local Hub (olah), run as a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.hub.helpers import MakeRepo, MlxdEnv, free_port, safetensors_bytes, sharded_model
from tests.hub.proxy import HubProxy

pytestmark = pytest.mark.hub


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed command, after checking it failed cleanly (exit 1, no traceback)."""
    assert result.returncode == 1, result
    stderr = result.stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, stderr  # the error, then maybe its hint
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def test_pull_by_repo_id_takes_only_the_mlx_files(
    mlxd_env: MlxdEnv, make_hub_repo: MakeRepo, tiny_model_files: dict[str, bytes], repo_name: str
) -> None:
    extras = {
        "README.md": b"# tiny\n",
        ".gitattributes": b"*.safetensors filter=lfs\n",
        "pytorch_model.bin": b"\x80\x02pickle",
        "onnx/model.onnx": b"onnx",
        "chat_template.jinja": b"{{ messages }}",
    }
    commit = make_hub_repo("org", repo_name, {**tiny_model_files, **extras}, lfs=(".safetensors",))

    result = mlxd_env.run("models", "pull", f"org/{repo_name}")

    assert result.returncode == 0, result.stderr
    assert f"pulled org/{repo_name} at main (commit {commit[:12]})" in result.stdout
    assert mlxd_env.snapshot_files(f"org/{repo_name}", commit) == set(tiny_model_files) | {
        "chat_template.jinja"
    }
    snapshot = mlxd_env.storage(f"org/{repo_name}") / "snapshots" / commit
    for name, data in tiny_model_files.items():
        assert (snapshot / name).read_bytes() == data
    assert (mlxd_env.storage(f"org/{repo_name}") / "refs" / "main").read_text() == commit
    assert not list(mlxd_env.storage(f"org/{repo_name}").glob("blobs/*.incomplete"))


def test_second_pull_downloads_nothing(
    mlxd_env: MlxdEnv,
    make_hub_repo: MakeRepo,
    tiny_model_files: dict[str, bytes],
    repo_name: str,
    hub_proxy: HubProxy,
) -> None:
    commit = make_hub_repo("org", repo_name, tiny_model_files)
    first = mlxd_env.run("models", "pull", f"org/{repo_name}", HF_ENDPOINT=hub_proxy.url)
    assert first.returncode == 0, first.stderr
    assert {r.path.rsplit("/", 1)[-1] for r in hub_proxy.file_gets()} == set(tiny_model_files)
    blobs = sorted((mlxd_env.storage(f"org/{repo_name}") / "blobs").iterdir())
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in blobs]
    hub_proxy.clear()

    second = mlxd_env.run("models", "pull", f"org/{repo_name}", HF_ENDPOINT=hub_proxy.url)

    assert second.returncode == 0, second.stderr
    assert hub_proxy.file_gets() == []
    assert f"{len(tiny_model_files)} files already complete" in second.stdout
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in blobs] == before
    assert mlxd_env.snapshot_files(f"org/{repo_name}", commit) == set(tiny_model_files)


def test_pull_by_alias_and_all(
    mlxd_env: MlxdEnv,
    make_hub_repo: MakeRepo,
    tiny_model_files: dict[str, bytes],
    repo_name: str,
    tmp_path: Path,
) -> None:
    commit = make_hub_repo("org", repo_name, tiny_model_files, tags=("v1",))
    local = tmp_path / "local-model"
    local.mkdir()
    config = tmp_path / "mlxd.toml"
    config.write_text(
        f'[models.tiny]\nmodel = "org/{repo_name}"\nrevision = "v1"\n\n[models.mine]\nmodel = "./local-model"\n'
    )

    by_alias = mlxd_env.run("models", "pull", "tiny", "--config", str(config))
    local_alias = mlxd_env.run("models", "pull", "mine", "--config", str(config))
    everything = mlxd_env.run("models", "pull", "--all", "--config", str(config))

    assert by_alias.returncode == 0, by_alias.stderr
    assert f"pulled org/{repo_name} at v1 (commit {commit[:12]})" in by_alias.stdout
    assert (mlxd_env.storage(f"org/{repo_name}") / "refs" / "v1").read_text() == commit
    assert local_alias.returncode == 0
    assert "alias mine uses a local directory (./local-model): nothing to pull" in local_alias.stdout
    assert everything.returncode == 0, everything.stderr
    assert f"{len(tiny_model_files)} files already complete" in everything.stdout
    assert "nothing to pull" in everything.stdout


def test_pull_a_commit_hash(
    mlxd_env: MlxdEnv, make_hub_repo: MakeRepo, tiny_model_files: dict[str, bytes], repo_name: str
) -> None:
    commit = make_hub_repo("org", repo_name, tiny_model_files)

    result = mlxd_env.run("models", "pull", f"org/{repo_name}", "--revision", commit)

    assert result.returncode == 0, result.stderr
    assert mlxd_env.snapshot_files(f"org/{repo_name}", commit) == set(tiny_model_files)
    assert not (mlxd_env.storage(f"org/{repo_name}") / "refs").exists()  # a commit needs no ref


def test_unknown_repo_and_revision_are_one_line_errors(
    mlxd_env: MlxdEnv, make_hub_repo: MakeRepo, tiny_model_files: dict[str, bytes], repo_name: str
) -> None:
    make_hub_repo("org", repo_name, tiny_model_files)

    no_repo = mlxd_env.run("models", "pull", "org/does-not-exist")
    no_branch = mlxd_env.run("models", "pull", f"org/{repo_name}", "--revision", "nope")
    no_commit = mlxd_env.run("models", "pull", f"org/{repo_name}", "--revision", "0" * 40)
    bad_name = mlxd_env.run("models", "pull", "../../etc")
    bad_revision = mlxd_env.run("models", "pull", f"org/{repo_name}", "--revision", "../x")

    assert (
        one_error_line(no_repo)
        == f"error: repo org/does-not-exist not found on {mlxd_env.env['HF_ENDPOINT']}"
    )
    assert one_error_line(no_branch) == f"error: revision 'nope' not found in org/{repo_name}"
    assert one_error_line(no_commit) == f"error: revision '{'0' * 40}' not found in org/{repo_name}"
    assert "is neither a configured alias nor a repo id" in one_error_line(bad_name)
    assert "is not a branch, tag or commit" in one_error_line(bad_revision)
    assert not mlxd_env.storage(f"org/{repo_name}").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("python_file", "ships code (modeling_tiny.py); mlxd never runs code from a model repo"),
        ("model_file", "config.json asks to import Python code (model_file); mlxd never runs it"),
        ("no_weights", "is not an MLX model: no model*.safetensors weights"),
        ("pytorch_only", "is not an MLX model: no model*.safetensors weights (only pytorch_model.bin)"),
        (
            "unknown_type",
            "is not an MLX model: model_type 'not-a-real-arch' is not supported by the installed mlx-lm",
        ),
        ("truncated_weights", "model.safetensors is incomplete"),
    ],
)
def test_repos_mlxd_must_not_run_are_refused(
    mlxd_env: MlxdEnv,
    make_hub_repo: MakeRepo,
    tiny_model_files: dict[str, bytes],
    repo_name: str,
    case: str,
    message: str,
) -> None:
    files = dict(tiny_model_files)
    config = json.loads(files["config.json"])
    if case == "python_file":
        files["modeling_tiny.py"] = b"import os\n"
    elif case == "model_file":
        files["config.json"] = json.dumps({**config, "model_file": "evil.py"}).encode()
    elif case == "no_weights":
        del files["model.safetensors"]
    elif case == "pytorch_only":
        del files["model.safetensors"]
        files["pytorch_model.bin"] = b"\x80\x02pickle"
    elif case == "unknown_type":
        files["config.json"] = json.dumps({**config, "model_type": "not-a-real-arch"}).encode()
    elif case == "truncated_weights":
        files["model.safetensors"] = safetensors_bytes({"w": os.urandom(4096)}, truncate=100)
    commit = make_hub_repo("org", repo_name, files)

    result = mlxd_env.run("models", "pull", f"org/{repo_name}")

    assert message in one_error_line(result)
    # Nothing is offered: no snapshot with files, no ref.
    assert mlxd_env.snapshot_files(f"org/{repo_name}", commit) == set()
    assert not (mlxd_env.storage(f"org/{repo_name}") / "refs" / "main").exists()


def test_offline_with_nothing_cached_says_so(
    mlxd_env: MlxdEnv, make_hub_repo: MakeRepo, tiny_model_files: dict[str, bytes], repo_name: str
) -> None:
    make_hub_repo("org", repo_name, tiny_model_files)

    offline = mlxd_env.run("models", "pull", f"org/{repo_name}", HF_HUB_OFFLINE="1")
    online = mlxd_env.run("models", "pull", f"org/{repo_name}")
    offline_again = mlxd_env.run("models", "pull", f"org/{repo_name}", HF_HUB_OFFLINE="1")

    assert (
        one_error_line(offline)
        == f"error: HF_HUB_OFFLINE is set and org/{repo_name} is not (completely) in the cache"
    )
    assert online.returncode == 0, online.stderr
    assert offline_again.returncode == 0, offline_again.stderr
    assert "is already in the cache (offline)" in offline_again.stdout


def test_unreachable_endpoint(mlxd_env: MlxdEnv) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"

    result = mlxd_env.run("models", "pull", "org/anything", HF_ENDPOINT=endpoint)

    assert one_error_line(result) == f"error: cannot reach the Hub at {endpoint} (connection refused)"


def test_an_endpoint_that_is_no_hub(mlxd_env: MlxdEnv) -> None:
    """A web page answering 200 (a captive portal, a mistyped HF_ENDPOINT)."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>Sign in to the hotel Wi-Fi</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = mlxd_env.run("models", "pull", "org/anything", HF_ENDPOINT=endpoint)
    finally:
        server.shutdown()
    assert (
        one_error_line(result)
        == f"error: {endpoint} did not answer as a Hugging Face Hub (its reply is not JSON)"
    )


def test_a_cache_that_is_not_a_directory(
    mlxd_env: MlxdEnv,
    make_hub_repo: MakeRepo,
    tiny_model_files: dict[str, bytes],
    repo_name: str,
    tmp_path: Path,
) -> None:
    make_hub_repo("org", repo_name, tiny_model_files)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n", encoding="utf-8")
    result = mlxd_env.run("models", "pull", f"org/{repo_name}", HF_HUB_CACHE=str(blocker / "hub"))
    line = one_error_line(result)
    assert line.startswith("error: cannot write to the Hugging Face cache (not a directory: "), line
    assert "HF_HUB_CACHE" in result.stderr  # the hint


def test_not_enough_disk_space_is_refused_before_the_weights(
    mlxd_env: MlxdEnv,
    make_hub_repo: MakeRepo,
    tiny_model_files: dict[str, bytes],
    repo_name: str,
    tmp_path: Path,
) -> None:
    commit = make_hub_repo("org", repo_name, tiny_model_files)
    # The one stand-in in this file: the OS reports a nearly full volume to the CLI process.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import shutil\n"
        "_real = shutil.disk_usage\n"
        "def disk_usage(path):\n"
        "    usage = _real(path)\n"
        "    return type(usage)(usage.total, usage.total - 1000, 1000)\n"
        "shutil.disk_usage = disk_usage\n"
    )

    result = mlxd_env.run("models", "pull", f"org/{repo_name}", PYTHONPATH=str(shim))

    assert "error: not enough disk space: the download needs" in one_error_line(result)
    assert mlxd_env.snapshot_files(f"org/{repo_name}", commit) <= {"config.json"}
    assert "model.safetensors" not in mlxd_env.snapshot_files(f"org/{repo_name}", commit)


def test_sharded_lfs_model(mlxd_env: MlxdEnv, make_hub_repo: MakeRepo, repo_name: str) -> None:
    files = sharded_model({"model_type": "mistral"}, [3000, 5000])
    commit = make_hub_repo("org", repo_name, files, lfs=(".safetensors",))

    result = mlxd_env.run("models", "pull", f"org/{repo_name}")

    assert result.returncode == 0, result.stderr
    assert mlxd_env.snapshot_files(f"org/{repo_name}", commit) == set(files)
    blobs = {p.name for p in (mlxd_env.storage(f"org/{repo_name}") / "blobs").iterdir()}
    assert hashlib.sha256(files["model-00002-of-00002.safetensors"]).hexdigest() in blobs  # LFS etag = sha256
