"""``mlxd serve``: run the daemon in the foreground (what launchd and systemd run).

Every way it can fail to start ends in one line with what to change, on stderr (the
CLI's error map prints it) and in the daemon's log, which is all a user of ``mlxd start``
or of the login service gets to read. Under a supervisor (``MLXD_SUPERVISED=1``) a
failure is also recorded for the crash-loop breaker, and once it says stop, ``serve``
exits 0 so launchd or systemd leave it down (``GaveUp``).

With ``[distributed]`` this process launches the ranks and watches them
(``mlxd.cluster.launcher``); each rank runs ``mlxd serve`` again, with its membership in
the environment: rank 0 serves HTTP, the others follow it (``mlxd.daemon``). A rank that
dies ends the daemon with an error, which the breaker counts like a failed start.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mlxd.cli.errors import GaveUp
from mlxd.cli.options import ConfigOption
from mlxd.errors import ConfigError, MlxdError, RankFailedError, StartupError


def _demo_overrides(config_path: Any) -> dict[str, Any]:
    """An alias ``demo`` that requests naming no model get (the file is read to know which
    of its aliases to un-default)."""
    from mlxd.config import load_config
    from mlxd.config.paths import data_dir
    from mlxd.runtime.demo_setup import ensure_demo_model

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
    from mlxd.cluster.membership import Membership
    from mlxd.config import discover_config_path

    member = Membership.from_env()
    if member is not None and member.rank != 0:
        _follow(member)  # a follower rank: no config, no HTTP
        return
    # The launcher of a distributed daemon is the supervised process, not its rank 0.
    supervised = os.environ.get("MLXD_SUPERVISED") == "1" and member is None
    path = discover_config_path(config)
    try:
        _serve(path, host, port, demo, supervised, member)
    except MlxdError as error:
        raise _failed_start(error, path, supervised) from None


def _follow(member: Any) -> None:
    from mlxd.daemon import follow
    from mlxd.logs import setup_logging

    # Its lines go to mlx.launch, which hands them to the launcher's log.
    setup_logging("info", "text", None, console=True, tag=f"rank {member.rank}")
    if not follow(member):
        raise typer.Exit(1)


def _rank_argv(path: Path | None, host: str | None, port: int | None, demo: bool) -> list[str]:
    """How every rank runs ``mlxd serve``: with this one's config and flags."""
    argv = ["serve"]
    if path is not None:
        argv += ["--config", str(path.resolve())]
    if host is not None:
        argv += ["--host", host]
    if port is not None:
        argv += ["--port", str(port)]
    return [*argv, "--demo"] if demo else argv


def _serve(
    path: Path | None, host: str | None, port: int | None, demo: bool, supervised: bool, member: Any = None
) -> None:
    from mlxd.cli.ports import check_listenable
    from mlxd.config.paths import log_dir
    from mlxd.config.store import ConfigStore
    from mlxd.logs import setup_logging

    overrides = _demo_overrides(path) if demo else {}
    # Flags are overrides like any other: the schema's rules (a non-loopback host needs an
    # api_key) check them, and every reload applies them again.
    address = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if address:
        overrides["server"] = address
    store = ConfigStore(path, overrides)  # the one load of the config
    settings = store.current.server
    # In a terminal, log there too; detached or under launchd the file is enough.
    setup_logging(
        settings.log_level,
        settings.log_format,
        log_dir(),
        console=sys.stderr.isatty() and not supervised and member is None,
    )
    check_listenable(settings.host, settings.port)
    distributed = store.current.distributed
    if distributed is not None and member is None:
        from mlxd.cluster.launcher import serve_distributed

        serve_distributed(distributed, _rank_argv(path, host, port, demo))
        return
    from mlxd.daemon import run  # imported here: `mlxd --help` must not load MLX

    try:
        run(store, member)
    except SystemExit as exit_:  # uvicorn exits 1 when it cannot bind after all (a race)
        if exit_.code in (0, None):
            raise
        raise StartupError("the server could not start listening (see the lines above in the log)") from None


def _failed_start(error: MlxdError, path: Path | None, supervised: bool) -> MlxdError:
    """Log the failure, feed the crash-loop breaker when supervised; the error to report."""
    from mlxd.cli.errors import details, hint_for

    reason = "; ".join([error.message, *details(error)])
    verb = "stopped" if isinstance(error, RankFailedError) else "could not start"
    _log(f"{verb}: {reason}" + (f" (hint: {hint})" if (hint := hint_for(error)) else ""))
    if not supervised:
        return error
    from mlxd import supervision

    supervision.record_start_failure(reason, config=path)
    # A bad config fails the same way every time: no point in being relaunched at all.
    if isinstance(error, ConfigError) or supervision.should_give_up(config=path):
        supervision.record_gave_up(reason, config=path)
        return GaveUp(error)
    return error


def _log(line: str) -> None:
    """Put a line in the daemon's log (set up with defaults if the config never got that
    far); not on the console, where the CLI's error map prints the failure itself."""
    from mlxd.logs import FILE_ONLY

    if not logging.getLogger().handlers:
        from mlxd.config.paths import log_dir
        from mlxd.logs import setup_logging

        try:
            setup_logging("info", "text", log_dir(), console=False)
        except OSError:
            return  # no log directory: stderr is all there is
    logging.getLogger("mlxd").error("%s", line, extra={FILE_ONLY: True})


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.command("serve")(serve)
