"""Prompt prefixes on disk: written off the worker, read back after a restart, bounded,
private, and a bad file is skipped and deleted, never a crash.

``DiskPromptCache`` on hand-made KV caches first (no model runs), then the daemon through
the OpenAI client: a long system prompt cached to disk is reused after a restart
(``cached_tokens`` in usage), and a corrupted file is skipped.
"""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import eventually, serving

pytestmark = [pytest.mark.mlx]

HEADS, WIDTH = 2, 8


def layers(tokens: list[int], count: int = 2, value: float = 0.5) -> list[Any]:
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    out = []
    for _ in range(count):
        cache = KVCache()
        shape = (1, HEADS, len(tokens), WIDTH)
        cache.update_and_fetch(mx.full(shape, value), mx.full(shape, -value))
        mx.eval(cache.state)
        out.append(cache)
    return out


SIGNATURE = [(HEADS, WIDTH, WIDTH, "mlx.core.float32")] * 2


def disk(directory: Path, max_bytes: int = 10**8, min_tokens: int = 32) -> Any:
    from mlxd.runtime.mlx.prompt_disk import DiskPromptCache

    return DiskPromptCache(directory, max_bytes, min_tokens)


def files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def test_a_prefix_goes_to_a_private_file_and_comes_back(tmp_path: Path) -> None:
    import mlx.core as mx

    directory = tmp_path / "prompts"
    cache = disk(directory).tier("model-a", SIGNATURE)
    tokens = list(range(100))
    cache.offer(tokens, layers(tokens))
    cache.offer(list(range(10)), layers(list(range(10))))  # shorter than min_tokens: not kept
    assert cache.disk.flush()
    (path,) = files(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found = cache.load([*range(60), 7, 7], better_than=0)
    assert found is not None
    got, held = found
    assert held == tokens
    assert got[0].offset == 100
    assert mx.array_equal(got[0].keys[..., :100, :], layers(tokens)[0].keys[..., :100, :]).item()
    # Another model (another identity) never reads it; a prompt sharing too little neither.
    assert disk(directory).tier("model-b", SIGNATURE).load(tokens, better_than=0) is None
    assert cache.load([*range(5), 999, *range(100)], better_than=0) is None
    cache.disk.close()


def test_a_restart_finds_the_files_and_an_extension_replaces_its_prefix(tmp_path: Path) -> None:
    first = disk(tmp_path).tier("m", SIGNATURE)
    short, long = list(range(50)), list(range(120))
    first.offer(short, layers(short))
    first.disk.flush()
    first.offer(long, layers(long))
    first.offer(short, layers(short))  # a file already holds it (inside the longer one)
    first.disk.close()
    assert len(files(tmp_path)) == 1
    again = disk(tmp_path).tier("m", SIGNATURE)
    found = again.load([*short, 5000], better_than=0)
    assert found is not None
    assert found[1] == long
    again.disk.close()


def test_the_least_recently_used_files_go_under_the_byte_bound(tmp_path: Path) -> None:
    cache = disk(tmp_path).tier("m", SIGNATURE)
    prompts = [[p, *range(100, 160)] for p in range(3)]
    cache.offer(prompts[0], layers(prompts[0]))
    cache.disk.flush()
    size = files(tmp_path)[0].stat().st_size
    cache.disk.configure(tmp_path, int(size * 2.5), 32)
    time.sleep(0.02)
    cache.offer(prompts[1], layers(prompts[1]))
    cache.disk.flush()
    time.sleep(0.02)
    assert cache.load(prompts[0], better_than=0) is not None  # the first is now the newest
    cache.offer(prompts[2], layers(prompts[2]))
    cache.disk.flush()
    assert len(files(tmp_path)) == 2
    assert cache.load(prompts[1], better_than=0) is None
    assert cache.load(prompts[0], better_than=0) is not None
    assert cache.disk.bytes <= size * 2.5
    cache.disk.close()


def test_bad_files_are_skipped_with_a_log_line_and_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = disk(tmp_path).tier("m", SIGNATURE)
    tokens = list(range(80))
    cache.offer(tokens, layers(tokens))
    cache.disk.close()
    (path,) = files(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    (tmp_path / ("0" * 40 + ".safetensors")).write_bytes(b"\xff" * 64)  # not safetensors at all
    (tmp_path / "notes.txt").write_text("not ours")
    caplog.set_level(logging.WARNING, logger="mlxd.runtime")
    again = disk(tmp_path).tier("m", SIGNATURE)
    assert again.load(tokens, better_than=0) is None
    again.disk.flush()
    assert files(tmp_path) == []
    assert (tmp_path / "notes.txt").exists()
    skipped = [r.getMessage() for r in caplog.records if "skipping the prompt cache file" in r.getMessage()]
    assert len(skipped) == 2
    assert all(str(tmp_path) not in line for line in skipped)
    # Values that are not finite (damaged data that still parses) are refused too.
    damaged = layers(tokens, value=float("nan"))
    again.offer(tokens, damaged)
    again.disk.flush()
    assert again.load(tokens, better_than=0) is None
    assert files(tmp_path) == []
    # A cache of another shape (another model's file under a stale name) is refused.
    other = disk(tmp_path).tier("m", [(HEADS, WIDTH * 2, WIDTH * 2, "mlx.core.float32")] * 2)
    again.offer(tokens, layers(tokens))
    again.disk.close()
    assert other.load(tokens, better_than=0) is None
    other.disk.close()


def test_a_config_edit_moves_the_directory_or_turns_the_disk_off(tmp_path: Path) -> None:
    cache = disk(tmp_path / "one").tier("m", SIGNATURE)
    tokens = list(range(70))
    cache.offer(tokens, layers(tokens))
    cache.disk.flush()
    cache.disk.configure(tmp_path / "two", 10**8, 32)
    assert cache.load(tokens, better_than=0) is None  # the new directory is empty
    cache.offer(tokens, layers(tokens))
    cache.disk.flush()
    assert len(files(tmp_path / "one")) == len(files(tmp_path / "two")) == 1
    cache.disk.configure(None, 10**8, 32)
    cache.offer([*tokens, 1], layers([*tokens, 1]))
    assert cache.load(tokens, better_than=0) is None
    cache.disk.configure(tmp_path / "one", 10**8, 32)  # back: the files there are found again
    assert cache.load(tokens, better_than=0) is not None
    cache.disk.close()
    assert len(files(tmp_path / "two")) == 1


def test_a_scan_that_fails_unexpectedly_still_lets_reads_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlxd.runtime.mlx import prompt_disk

    def broken(directory: Path) -> list[Any]:
        raise RuntimeError("a bug in the scan")

    monkeypatch.setattr(prompt_disk, "scan_files", broken)
    cache = disk(tmp_path).tier("m", SIGNATURE)
    assert cache.disk.flush()
    assert cache.disk.scanned(timeout=0)  # reads do not wait for a scan that is over
    assert cache.load(list(range(80)), better_than=0) is None
    cache.disk.close()


def test_a_directory_moved_away_and_back_mid_scan_keeps_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from mlxd.runtime.mlx import prompt_disk
    from mlxd.runtime.mlx.prompt_files import scan_files

    tokens = list(range(90))
    first = disk(tmp_path / "one").tier("m", SIGNATURE)
    first.offer(tokens, layers(tokens))
    first.disk.close()
    inside, release = threading.Event(), threading.Event()

    def slow(directory: Path) -> list[Any]:
        if not inside.is_set():  # the first scan waits until the test has moved the directory
            inside.set()
            assert release.wait(10)
        return scan_files(directory)

    monkeypatch.setattr(prompt_disk, "scan_files", slow)
    again = disk(tmp_path / "one").tier("m", SIGNATURE)
    assert inside.wait(10)
    again.disk.configure(tmp_path / "two", 10**8, 32)
    again.disk.configure(tmp_path / "one", 10**8, 32)
    assert not again.disk.scanned(timeout=0)  # this directory's own scan has not run yet
    release.set()
    assert again.disk.flush()
    assert again.disk.scanned(timeout=0)
    # Indexed once, by the scan the last move queued: the file is still there, and found.
    assert len(files(tmp_path / "one")) == 1
    found = again.load(tokens, better_than=0)
    assert found is not None
    assert found[1] == tokens
    again.disk.close()


SYSTEM = "You are the ship's navigator. Keep a careful log of every star you see tonight. " * 14


def _config(model: Path, cache_dir: Path) -> str:
    return f"""
[server]
port = 0

[runtime]
keep_alive = "forever"
prompt_cache_dir = "{cache_dir}"
prompt_cache_disk_min_tokens = 64

[defaults]
temperature = 0.0
max_tokens = 16

[models.tiny]
model = "{model}"
"""


def _ask(url: str) -> tuple[str, int, int]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What do you see?"}],
    )
    assert reply.usage is not None
    details = reply.usage.prompt_tokens_details
    assert details is not None
    return reply.choices[0].message.content or "", reply.usage.prompt_tokens, details.cached_tokens or 0


@pytest.mark.server
def test_a_prompt_cached_to_disk_is_reused_after_a_restart(tiny_model_dir: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "prompt-cache"
    with serving(tmp_path, _config(tiny_model_dir, cache_dir)) as running:
        text, prompt_tokens, cached = _ask(running.url)
        assert prompt_tokens > 300
        assert cached == 0
        assert eventually(lambda: bool(files(cache_dir)), 10)
    with serving(tmp_path, _config(tiny_model_dir, cache_dir)) as running:
        again, _, cached = _ask(running.url)
    assert again == text
    assert cached >= prompt_tokens - 1  # the whole prompt but the token that must run

    # A corrupted file: skipped (and deleted) after the next restart, the answer unchanged.
    for path in files(cache_dir):
        data = bytearray(path.read_bytes())
        path.write_bytes(bytes(data[: len(data) * 2 // 3]))
    with serving(tmp_path, _config(tiny_model_dir, cache_dir)) as running:
        third, _, cached = _ask(running.url)
        assert running.status()["worker"] == "running"
    assert third == text
    assert cached == 0
