"""``mlxd serve``: run the daemon in the foreground (what launchd and systemd run)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any

import typer

from mlxd.cli.errors import report
from mlxd.cli.options import ConfigOption
from mlxd.errors import ConfigError, MlxdError


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            logging.Formatter(
                '{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":%(message)r}'
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _demo_overrides(config_path: Any) -> dict[str, Any]:
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
    from mlxd.config import discover_config_path, load_config

    path = discover_config_path(config)
    try:
        overrides = _demo_overrides(path) if demo else {}
        from mlxd.daemon import run  # imported here: `mlxd --help` must not load MLX

        settings = load_config(path, overrides)
        _setup_logging(settings.server.log_level, settings.server.log_format)
        run(path, overrides, host=host, port=port)
    except ConfigError as error:
        code = report(error)
        # Under launchd/systemd a bad config must not cause a relaunch loop.
        raise SystemExit(0 if os.environ.get("MLXD_SUPERVISED") == "1" else code) from None
    except MlxdError as error:
        raise SystemExit(report(error)) from None


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.command("serve")(serve)
