"""Watch ``mlxd.toml`` and reload the config store when it changes.

We watch the file's PARENT directory, not the file: editors (vim, VS Code, JetBrains)
save by writing a temporary file and renaming it over the original, which replaces the
inode a file watch would be attached to, and the file may briefly not exist at all.

Events can be missed: an edit made after the first read but before the watch is in
place, or a file system that reports nothing. So every wake-up, event or not, also
compares the file's identity, size and modification time with what the last reload
saw; a missed edit is picked up within ``_RECHECK_MS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import watchfiles

from mlxd.config.store import ConfigStore
from mlxd.errors import ConfigError

log = logging.getLogger("mlxd.config")

#: How often the watch loop wakes up without events, to notice a replaced directory.
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
    target = store.path.absolute()
    names = {target.name}
    with contextlib.suppress(OSError, RuntimeError):
        names.add(target.resolve().name)  # a symlinked config: its target's name changes too
    # awatch sets its stop event when cancelled; give it our own so a cancelled watcher
    # never sets the caller's event (which may stop the whole daemon).
    inner = asyncio.Event()
    relay = asyncio.create_task(_relay(stop, inner))
    reloader = _Reloader(store, target)
    try:
        await reloader.reload()
        while not inner.is_set():
            await _watch_directory(reloader, target.parent, names, inner, debounce_ms)
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay


async def _watch_directory(
    reloader: _Reloader, directory: Path, names: set[str], stop: asyncio.Event, debounce_ms: int
) -> None:
    """Watch ``directory`` until stopped, or until it disappears or is replaced."""
    identity = _identity(directory)
    if identity is None:
        log.warning("config directory %s does not exist; waiting for it", directory)
        await _wait(stop, _RETRY_S)
        return
    try:
        async for changes in watchfiles.awatch(
            directory,
            watch_filter=lambda _change, changed: Path(changed).name in names,
            debounce=debounce_ms,
            step=min(50, debounce_ms),
            stop_event=stop,
            recursive=False,
            rust_timeout=_RECHECK_MS,
            yield_on_timeout=True,
        ):
            if changes:
                log.debug("config file changed: %s", sorted(Path(p).name for _, p in changes))
                await reloader.reload()
            elif reloader.stale():
                log.debug("config file changed without an event")
                await reloader.reload()
            if _identity(directory) != identity:
                log.info("config directory %s was replaced; watching it again", directory)
                await reloader.reload()
                return
    except (OSError, RuntimeError) as exc:
        log.warning("watching %s failed (%s); trying again", directory, exc)
        await _wait(stop, _RETRY_S)


_Fingerprint = tuple[int, int, int, int] | None


class _Reloader:
    """Reloads ``store`` and remembers what its file looked like when it last did."""

    def __init__(self, store: ConfigStore, path: Path) -> None:
        self._store = store
        self._path = path
        self._seen: _Fingerprint = None

    def stale(self) -> bool:
        """Whether the file changed since the last reload read it."""
        return _fingerprint(self._path) != self._seen

    async def reload(self) -> None:
        """Reload off the event loop (pure Python, no MLX); the store logs the outcome."""
        # Taken before the read: a write racing the read leaves the file stale, not lost.
        self._seen = _fingerprint(self._path)
        try:
            await asyncio.to_thread(self._store.reload)
        except ConfigError:
            pass  # already logged and kept in store.last_error; the old config keeps serving
        except Exception:
            log.exception("config reload failed unexpectedly; the old config keeps serving")


def _fingerprint(path: Path) -> _Fingerprint:
    """The file's device, inode, size and modification time (following a symlink), or None."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


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
