"""The watcher on a real file with real watchfiles, saved the way editors save (temp + rename)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mlxd.config import watcher
from mlxd.config.store import ConfigStore
from mlxd.config.watcher import watch_config
from tests.config.conftest import replace_file

DEADLINE_S = 15.0


def config_text(max_tokens: int) -> str:
    return f'[defaults]\nmax_tokens = {max_tokens}\n\n[models.qwen]\nmodel = "org/name"\n'


async def until(condition: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; True when it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


@asynccontextmanager
async def watching(store: ConfigStore) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(watch_config(store, stop, debounce_ms=50))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def edit_until_applied(store: ConfigStore, path: Path, max_tokens: int) -> None:
    """Save ``max_tokens`` once and wait until the store has it, even when the save lands
    before the watch is up (the watcher's recheck finds what no event reported)."""
    replace_file(path, config_text(max_tokens))
    if not await until(lambda: store.current.defaults.max_tokens == max_tokens):
        raise AssertionError(f"the watcher never applied max_tokens = {max_tokens}")


def make_store(tmp_path: Path) -> tuple[ConfigStore, Path]:
    path = tmp_path / "mlxd.toml"
    path.write_text(config_text(100), encoding="utf-8")
    return ConfigStore(path), path


# ".venv": a directory watchfiles' default filter ignores everything under.
@pytest.mark.parametrize("folder", ["conf", ".venv"])
def test_a_saved_edit_is_applied_on_its_event(
    tmp_path: Path, folder: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / folder).mkdir()
    store, path = make_store(tmp_path / folder)

    async def scenario() -> None:
        async with watching(store):
            await edit_until_applied(store, path, 200)
            assert store.generation >= 2
            generation = store.generation
            caplog.clear()
            replace_file(path, config_text(300))  # the watch is up now: one save is enough
            assert await until(lambda: store.current.defaults.max_tokens == 300)
            assert store.generation == generation + 1

    with caplog.at_level(logging.DEBUG, logger="mlxd.config"):
        asyncio.run(scenario())
    # Applied because the save raised its event, not by the recheck every 2 s.
    assert "config file changed: ['mlxd.toml']" in caplog.messages


def test_an_invalid_edit_keeps_the_old_config(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)

    async def scenario() -> None:
        async with watching(store):
            await edit_until_applied(store, path, 200)
            generation = store.generation
            replace_file(path, config_text(0))  # max_tokens must be >= 1
            assert await until(lambda: store.last_error is not None)
            assert "defaults.max_tokens (line 2)" in (store.last_error or "")
            assert (store.generation, store.current.defaults.max_tokens) == (generation, 200)
            replace_file(path, config_text(400))
            assert await until(lambda: store.current.defaults.max_tokens == 400)
            assert store.last_error is None

    asyncio.run(scenario())


def test_survives_delete_and_recreate(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)

    async def scenario() -> None:
        async with watching(store):
            await edit_until_applied(store, path, 200)
            path.unlink()
            assert await until(lambda: "not found" in (store.last_error or ""))
            assert store.current.defaults.max_tokens == 200
            path.write_text(config_text(500), encoding="utf-8")
            assert await until(lambda: store.current.defaults.max_tokens == 500)
            assert store.last_error is None

    asyncio.run(scenario())


def test_applies_an_edit_made_before_it_started(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    replace_file(path, config_text(600))  # e.g. while the daemon was still starting

    async def scenario() -> None:
        async with watching(store):
            assert await until(lambda: store.current.defaults.max_tokens == 600)

    asyncio.run(scenario())


def test_applies_an_edit_no_event_reported(tmp_path: Path) -> None:
    """Written through a hard link in another directory: the watched directory gets no
    event, as with an edit made while the watch was being set up."""
    store, path = make_store(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "linked.toml"

    async def scenario() -> None:
        async with watching(store):
            await edit_until_applied(store, path, 200)  # a save replaces the file: link after it
            link.hardlink_to(path)
            link.write_text(config_text(700), encoding="utf-8")  # same inode, in place
            assert await until(lambda: store.current.defaults.max_tokens == 700)

    asyncio.run(scenario())


# ".other.swp": a name watchfiles' default filter drops, which must still wake the watch.
@pytest.mark.parametrize("busy_name", ["other.log", ".other.swp"])
def test_applies_an_edit_no_event_reported_while_the_directory_is_busy(
    tmp_path: Path, busy_name: str
) -> None:
    """Another file of the directory changing all the time still leaves the watch time to
    notice an edit that raised no event of its own (the watch wakes for the other file)."""
    store, path = make_store(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "linked.toml"

    async def scenario() -> None:
        async with watching(store):
            await edit_until_applied(store, path, 200)
            link.hardlink_to(path)
            busy = asyncio.create_task(_keep_writing(tmp_path / busy_name))
            try:
                await asyncio.sleep(0.3)
                link.write_text(config_text(800), encoding="utf-8")
                assert await until(lambda: store.current.defaults.max_tokens == 800)
            finally:
                busy.cancel()

    asyncio.run(scenario())


async def _keep_writing(path: Path) -> None:
    for i in itertools.count():
        path.write_text(str(i), encoding="utf-8")
        await asyncio.sleep(0.02)


def test_a_missing_directory_is_logged_once_and_then_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(watcher, "_RETRY_S", 0.05)
    folder = tmp_path / "conf"
    folder.mkdir()
    store, path = make_store(folder)

    async def scenario() -> None:
        async with watching(store):
            await edit_until_applied(store, path, 200)
            shutil.rmtree(folder)
            assert await until(lambda: any("does not exist" in m for m in caplog.messages))
            await asyncio.sleep(0.3)  # a few more retries, which must not log again
            folder.mkdir()
            path.write_text(config_text(900), encoding="utf-8")
            assert await until(lambda: store.current.defaults.max_tokens == 900)

    with caplog.at_level(logging.WARNING, logger="mlxd.config"):
        asyncio.run(scenario())
    missing = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(missing) == 1


def test_returns_promptly_when_stopped(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(watch_config(store, stop))
        await edit_until_applied(store, path, 200)  # now it is blocked in its watch
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0


def test_cancelling_does_not_set_the_callers_event(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)

    async def scenario() -> bool:
        stop = asyncio.Event()
        task = asyncio.create_task(watch_config(store, stop))
        await edit_until_applied(store, path, 200)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return stop.is_set()

    assert asyncio.run(scenario()) is False


def test_no_file_means_nothing_to_watch() -> None:
    store = ConfigStore(None)

    async def scenario() -> None:
        await asyncio.wait_for(watch_config(store, asyncio.Event()), 1)

    asyncio.run(scenario())
    assert store.last_reload_at is None
