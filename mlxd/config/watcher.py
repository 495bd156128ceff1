"""Watch ``mlxd.toml`` and reload the config store when it changes.

We watch the file's PARENT directory, not the file: editors (vim, VS Code, JetBrains)
save by writing a temporary file and renaming it over the original, which replaces the
inode a file watch would be attached to, and the file may briefly not exist at all.

Events can be missed: an edit made after the first read but before the watch is in
place, a symlinked config whose target lives in another directory, a file system that
reports nothing. So every wake-up of the watch (a change to any file of the directory,
or ``_RECHECK_MS`` without one) also asks the store whether the file still is the one
it last read (identity, size, modification time); such an edit is applied once the file
has kept still for the debounce time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import watchfiles

from mlxd.config.store import ConfigStore, fingerprint
from mlxd.errors import ConfigError

log = logging.getLogger("mlxd.config")

#: The longest the watch sleeps without events before it checks the file and directory.
_RECHECK_MS = 2000
#: Pause before trying again when the directory is missing or the watch failed.
_RETRY_S = 1.0


async def watch_config(store: ConfigStore, stop: asyncio.Event, debounce_ms: int = 200) -> None:
    """Reload ``store`` whenever its file changes, until ``stop`` is set; a no-op without a file.

    Changes are debounced (``debounce_ms``) so one save is one reload. Outcomes are logged
    by ``ConfigStore.reload`` ("config reloaded, generation N" or the rejection), which
    keeps the old config on any error. Once at start it reconciles with the file, so an
    edit made while the daemon was starting is not lost.
    """
    if store.path is None:
        return
    # awatch sets its stop event when cancelled; give it our own so a cancelled watcher
    # never sets the caller's event (which may stop the whole daemon).
    inner = asyncio.Event()
    relay = asyncio.create_task(_relay(stop, inner))
    watch = _Watch(store, store.path.absolute(), inner, debounce_ms)
    try:
        await _reload(store)
        while not inner.is_set():
            await watch.directory()
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay


class _Watch:
    """The watch on the config file's directory, started again when it goes or is replaced."""

    def __init__(self, store: ConfigStore, target: Path, stop: asyncio.Event, debounce_ms: int) -> None:
        self._store = store
        self._target = target
        self._names = {target.name}
        with contextlib.suppress(OSError, RuntimeError):
            self._names.add(target.resolve().name)  # a symlinked config: its target's name changes too
        self._stop = stop
        self._debounce_ms = debounce_ms
        self._missing = False  # the directory's absence was logged

    async def directory(self) -> None:
        """Watch the directory until stopped, or until it disappears or is replaced."""
        directory = self._target.parent
        identity = _identity(directory)
        if identity is None:
            if not self._missing:
                log.warning("config directory %s does not exist; waiting for it", directory)
            self._missing = True
            await _wait(self._stop, _RETRY_S)
            return
        self._missing = False
        quiet = False  # the last wake-up read the file without an event
        try:
            # watch_filter=None: awatch yields nothing for changes its filter drops (by
            # default editor swap files, and every path under a ".git" or ".venv"), and
            # every change must wake the loop, to reach the check for an edit no event
            # reported; the file's own names are picked out here.
            async for changes in watchfiles.awatch(
                directory,
                watch_filter=None,
                debounce=self._debounce_ms,
                step=min(50, self._debounce_ms),
                stop_event=self._stop,
                recursive=False,
                rust_timeout=_RECHECK_MS,
                yield_on_timeout=True,
            ):
                named = sorted({Path(p).name for _, p in changes} & self._names)
                if named and quiet and not self._store.file_changed():
                    quiet = False  # the event of the save the last wake-up already read
                elif named:
                    log.debug("config file changed: %s", named)
                    await _reload(self._store)
                    quiet = False
                elif quiet := await self._changed_quietly():
                    log.debug("config file changed without an event")
                    await _reload(self._store)
                if _identity(directory) != identity:
                    log.info("config directory %s was replaced; watching it again", directory)
                    if self._store.file_changed():
                        await _reload(self._store)
                    return
        except (OSError, RuntimeError) as exc:
            log.warning("watching %s failed (%s); trying again", directory, exc)
            if self._store.file_changed():
                await _reload(self._store)
            await _wait(self._stop, _RETRY_S)

    async def _changed_quietly(self) -> bool:
        """The file differs from what the store last read and kept still for the debounce
        time (an editor writing it in place without an event is not read half-written)."""
        if not self._store.file_changed():
            return False
        before = fingerprint(self._target)
        await _wait(self._stop, self._debounce_ms / 1000)
        return not self._stop.is_set() and fingerprint(self._target) == before


async def _reload(store: ConfigStore) -> None:
    """Reload off the event loop (pure Python, no MLX); the store logs the outcome."""
    try:
        await asyncio.to_thread(store.reload)
    except ConfigError:
        pass  # already logged and kept in store.last_error; the old config keeps serving
    except Exception:
        log.exception("config reload failed unexpectedly; the old config keeps serving")


def _identity(directory: Path) -> tuple[int, int] | None:
    try:
        info = directory.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
