"""Helpers for the Hub tests: model files, git repos for olah, and running the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

MakeRepo = Callable[..., str]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def answers(url: str) -> bool:
    """True once an HTTP server answers at ``url`` (with any status)."""
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def safetensors_bytes(tensors: Mapping[str, bytes], *, truncate: int = 0) -> bytes:
    """A safetensors file of 1-D uint8 tensors (``truncate`` drops bytes from the end)."""
    header: dict[str, object] = {"__metadata__": {"format": "mlx"}}
    offset = 0
    for name, data in tensors.items():
        header[name] = {"dtype": "U8", "shape": [len(data)], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    blob = struct.pack("<Q", len(raw)) + raw + b"".join(tensors.values())
    return blob[: len(blob) - truncate] if truncate else blob


def sharded_model(config: Mapping[str, object], shard_sizes: list[int]) -> dict[str, bytes]:
    """A model split into ``model-0000i-of-0000n.safetensors`` shards plus its index."""
    n = len(shard_sizes)
    files: dict[str, bytes] = {"config.json": json.dumps(config).encode()}
    weight_map = {}
    for i, size in enumerate(shard_sizes, start=1):
        name = f"model-{i:05d}-of-{n:05d}.safetensors"
        files[name] = safetensors_bytes({f"layer{i}.weight": os.urandom(size)})
        weight_map[f"layer{i}.weight"] = name
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity and no signing; return its stdout."""
    identity = [
        "-c",
        "user.name=mlxd tests",
        "-c",
        "user.email=tests@mlxd.invalid",
        "-c",
        "commit.gpgsign=false",
    ]
    return subprocess.run(
        ["git", *identity, *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class HubServer:
    """olah on loopback, serving every git repository under ``mirrors/models/<org>/<name>``."""

    url: str
    mirrors: Path
    process: subprocess.Popen[bytes]


@dataclass
class MlxdEnv:
    """Environment and helpers to run ``python -m mlxd`` against the local Hub."""

    root: Path
    env: dict[str, str]

    @property
    def cache(self) -> Path:
        """HF_HUB_CACHE."""
        return Path(self.env["HF_HUB_CACHE"])

    def storage(self, repo_id: str) -> Path:
        """The cache folder of a repo."""
        return self.cache / ("models--" + repo_id.replace("/", "--"))

    def snapshot_files(self, repo_id: str, commit: str) -> set[str]:
        """Names of the files in one snapshot."""
        snap = self.storage(repo_id) / "snapshots" / commit
        if not snap.is_dir():
            return set()
        return {p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()}

    def command(self, *args: str) -> list[str]:
        """The argv of ``mlxd <args>``."""
        return [sys.executable, "-m", "mlxd", *args]

    def popen(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        """Start ``mlxd <args>`` in the background, as from a terminal: Ctrl-C (SIGINT)
        reaches it even when the tests themselves run as a background job, which starts
        with SIGINT ignored (and Python keeps a signal ignored at startup ignored)."""
        return subprocess.Popen(
            self.command(*args),
            env={**self.env, **extra},
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def run(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run ``mlxd <args>`` to completion; ``extra`` adds environment variables."""
        return subprocess.run(
            self.command(*args),
            env={**self.env, **extra},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
