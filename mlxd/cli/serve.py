"""``mlxd serve``: run the daemon in the foreground (what launchd and systemd run)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from mlxd.cli.errors import report
from mlxd.cli.options import ConfigOption
from mlxd.errors import ConfigError, MlxdError


def _demo_overrides(config_path: Any) -> dict[str, Any]:
    """An alias ``demo`` that requests naming no model get (the file is read to know which
    of its aliases to un-default)."""
    from mlxd.config import load_config
    from mlxd.config.paths import data_dir
    from mlxd.runtime.demo_model import ensure_demo_model

    path = ensure_demo_model(data_dir())
    base = load_config(config_path)
    # --demo serves the demo model to requests that name none, whatever the file says.
    models: dict[str, Any] = {alias: {"default": False} for alias, m in base.models.items() if m.default}
    models["demo"] = {"model": str(path), "default": True}
    return {"models": models}


def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (overrides [server] host).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", "-p", help="Port (overrides [server] port).")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Add an alias 'demo': a tiny random-weight model built locally.")
    ] = False,
) -> None:
    """Run the daemon in the foreground."""
    from mlxd.config import discover_config_path

    supervised = os.environ.get("MLXD_SUPERVISED") == "1"
    path = discover_config_path(config)
    try:
        overrides = _demo_overrides(path) if demo else {}
        # Flags are overrides like any other: the schema's rules (a non-loopback host
        # needs an api_key) check them, and every reload applies them again.
        address = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        if address:
            overrides["server"] = address
        from mlxd.config.paths import log_dir
        from mlxd.config.store import ConfigStore
        from mlxd.daemon import run  # imported here: `mlxd --help` must not load MLX
        from mlxd.logs import setup_logging

        store = ConfigStore(path, overrides)  # the one load of the config
        settings = store.current.server
        # In a terminal, log there too; detached or under launchd the file is enough.
        setup_logging(
            settings.log_level, settings.log_format, log_dir(), console=sys.stderr.isatty() and not supervised
        )
        run(store)
    except ConfigError as error:
        code = report(error)
        if supervised:
            # Under launchd/systemd a bad config must not cause a relaunch loop.
            _give_up(f"invalid config: {error.message}", at_once=True)
            raise SystemExit(0) from None
        raise SystemExit(code) from None
    except MlxdError as error:
        code = report(error)
        raise SystemExit(_failed_start(error.message, code, supervised)) from None
    except SystemExit as exit_:  # uvicorn exits 1 when it cannot bind
        if exit_.code in (0, None):
            raise
        raise SystemExit(_failed_start("the server could not start (see the log)", 1, supervised)) from None


def _give_up(reason: str, *, at_once: bool) -> bool:
    """Record a failed start; True when the crash-loop breaker says to stop retrying."""
    from mlxd import supervision

    supervision.record_start_failure(reason)
    if at_once or supervision.should_give_up():
        supervision.record_gave_up(reason)
        return True
    return False


def _failed_start(reason: str, code: int, supervised: bool) -> int:
    """The exit code of a failed start: 0 once a supervisor should stop relaunching us."""
    if supervised and _give_up(reason, at_once=False):
        return 0
    return code


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.command("serve")(serve)
