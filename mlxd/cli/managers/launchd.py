"""The macOS login service: a LaunchAgent driven with ``launchctl`` in the user's domain.

The plist is rendered from ``deploy/launchd/io.mlxd.daemon.plist``. launchctl's exit
codes are errno values and its ``print`` output is explicitly not an API, so both are
handled defensively; the CLI confirms "running" with ``GET /health``.
"""

from __future__ import annotations

import os
import plistlib
import re
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

from mlxd.cli.logfiles import CONSOLE_LOG
from mlxd.cli.managers.base import (
    KILL_WAIT_S,
    LoginService,
    ServiceSpec,
    ServiceState,
    Tool,
    ToolResult,
    make_dirs,
    poll_until,
)
from mlxd.cli.managers.templates import template_path
from mlxd.errors import ServiceManagerError

LABEL = "io.mlxd.daemon"

# launchctl exit codes (errno values) and what they mean for us.
NO_SUCH_PROCESS = 3  # bootout: the service is not loaded
IO_ERROR = 5  # bootstrap: already loaded or still draining; bootout on newer macOS: not loaded
IN_PROGRESS = 36  # bootout: the service is still shutting down
NOT_FOUND = 113  # print / kickstart: the service is not bootstrapped

_SERVE_ARGS = "@SERVE_ARGS@"
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
_PRINT_FIELD = re.compile(r"^([ \t]*)(state|pid|last exit code) = (.*?)[ \t]*$", re.MULTILINE)


def render_plist(spec: ServiceSpec, label: str = LABEL) -> str:
    """The LaunchAgent for ``spec``: the template with every placeholder filled, typed."""
    template = plistlib.loads(template_path("launchd", f"{LABEL}.plist").read_bytes())
    console = str(spec.log_dir / CONSOLE_LOG)
    values: dict[str, Any] = {
        "LABEL": label,
        "PYTHON": str(spec.python),
        "EXIT_TIMEOUT": spec.stop_timeout_s,
        "WORKING_DIRECTORY": str(spec.working_dir),
        "STDOUT_PATH": console,
        "STDERR_PATH": console,
        "PATH": spec.path_env,
    }
    rendered = _fill(template, values, spec.serve_options())
    environment = rendered["EnvironmentVariables"]
    environment.update((name, value) for name, value in spec.env if name not in environment)
    return plistlib.dumps(rendered, sort_keys=False).decode()


def _fill(node: Any, values: dict[str, Any], serve_options: list[str]) -> Any:
    if isinstance(node, dict):
        return {key: _fill(value, values, serve_options) for key, value in node.items()}
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            if item == _SERVE_ARGS:
                out.extend(serve_options)
            else:
                out.append(_fill(item, values, serve_options))
        return out
    if isinstance(node, str) and (match := _PLACEHOLDER.fullmatch(node)):
        if match.group(1) not in values:
            raise ServiceManagerError(f"the plist template has an unknown placeholder {node}")
        return values[match.group(1)]
    return node


def parse_print(text: str) -> dict[str, str]:
    """``state``, ``pid`` and ``last exit code`` from ``launchctl print``, outermost wins.

    Nested blocks (endpoints, spawn details) may repeat a key deeper in; the service's own
    fields are the least indented ones.
    """
    found: dict[str, tuple[int, str]] = {}
    for match in _PRINT_FIELD.finditer(text):
        indent = len(match.group(1).expandtabs(8))
        key = match.group(2)
        if key not in found or indent < found[key][0]:
            found[key] = (indent, match.group(3))
    return {key: value for key, (_, value) in found.items()}


def _leading_int(text: str | None) -> int | None:
    match = re.match(r"-?\d+", text or "")
    return int(match.group()) if match else None


class LaunchdManager(LoginService):
    """A LaunchAgent in ``gui/$UID`` (or ``user/$UID`` when there is no GUI session)."""

    name = "launchd"

    def __init__(
        self,
        *,
        label: str = LABEL,
        home: Path | None = None,
        uid: int | None = None,
        tool: Tool | None = None,
    ) -> None:
        self.label = label
        self._home = home
        self._uid = uid
        self.tool = tool or Tool("MLXD_LAUNCHCTL", "launchctl")
        self._domain: str | None = None

    def service_file(self) -> Path:
        """``~/Library/LaunchAgents/<label>.plist``."""
        return (self._home or Path.home()) / "Library" / "LaunchAgents" / f"{self.label}.plist"

    @property
    def domain(self) -> str:
        """``gui/$UID``, or ``user/$UID`` when that domain does not exist (an SSH session)."""
        if self._domain is None:
            uid = os.getuid() if self._uid is None else self._uid
            gui = f"gui/{uid}"
            ok = self.tool.run("print", gui).returncode == 0
            self._domain = gui if ok else f"user/{uid}"
        return self._domain

    @property
    def target(self) -> str:
        """The service target, ``<domain>/<label>``."""
        return f"{self.domain}/{self.label}"

    def render(self, spec: ServiceSpec) -> str:
        """The plist text."""
        return render_plist(spec, self.label)

    def is_loaded(self) -> bool:
        """True while launchd knows the service (``print`` exits 0; 113 means not loaded)."""
        return self.tool.run("print", self.target).returncode == 0

    def install(self, spec: ServiceSpec, timeout_s: float) -> Path:
        """Write the plist and bootstrap it; RunAtLoad starts the daemon."""
        with self.installing(spec) as path:
            if self.is_loaded():
                # launchd keeps the plist it loaded; unload so the new one takes effect.
                self._bootout(timeout_s)
            self._bootstrap(timeout_s)
        return path

    def start(self, spec: ServiceSpec) -> None:
        """Bootstrap when not loaded (RunAtLoad starts it), else kickstart the loaded job."""
        make_dirs(spec)
        if not self.is_loaded():
            self._bootstrap(spec.stop_timeout_s)
            return
        result = self.tool.run("kickstart", self.target)
        if result.returncode == NOT_FOUND:  # unloaded in the meantime
            self._bootstrap(spec.stop_timeout_s)
            result = self.tool.run("kickstart", self.target)
        self._check(result)

    def stop(self, timeout_s: float) -> bool:
        """Boot the service out and wait until launchd has let go of it."""
        return self._bootout(timeout_s)

    def restart(self, spec: ServiceSpec, timeout_s: float) -> None:
        """Boot the job out and wait until launchd let go of it, then bootstrap it again
        (RunAtLoad starts the new daemon, from the plist as it is now).

        Not ``kickstart -k``: that kills the running daemon with SIGKILL, so its streams
        would end cut off instead of drained, as ``stop`` (bootout: SIGTERM, then
        ExitTimeOut) and the systemd backend's restart do."""
        make_dirs(spec)
        self._bootout(timeout_s)
        self._bootstrap(timeout_s)

    def state(self) -> ServiceState:
        """Parse ``launchctl print`` defensively."""
        result = self.tool.run("print", self.target)
        if result.returncode != 0:
            return ServiceState(loaded=False, running=False, detail="not loaded")
        fields = parse_print(result.stdout)
        state = fields.get("state", "unknown")
        pid = _leading_int(fields.get("pid"))
        return ServiceState(
            loaded=True,
            running=state == "running" and pid is not None,
            pid=pid,
            last_exit=_leading_int(fields.get("last exit code")),
            detail=state,
        )

    def recorded_argv(self) -> list[str] | None:
        """The installed plist's ProgramArguments."""
        try:
            data = plistlib.loads(self.service_file().read_bytes())
        # Missing, or damaged: truncated XML, not a plist, a value plistlib cannot read.
        except (OSError, ValueError, ExpatError, AttributeError, TypeError):
            return None
        argv = data.get("ProgramArguments") if isinstance(data, dict) else None
        return [str(word) for word in argv] if isinstance(argv, list) else None

    # --- launchctl sequences ----------------------------------------------------------

    def _check(self, result: ToolResult) -> None:
        if result.returncode != 0:
            raise ServiceManagerError(result.message())

    def _wait_unloaded(self, timeout_s: float) -> None:
        """Bootout returns before the job is gone; bootstrapping again too early fails with 5."""
        if not poll_until(lambda: not self.is_loaded(), timeout_s, self.poll_interval_s):
            raise ServiceManagerError(
                f"launchd is still stopping {self.label} after {timeout_s:g}s",
                hint="try again in a moment",
            )

    def _bootout(self, timeout_s: float) -> bool:
        result = self.tool.run("bootout", self.target)
        if result.returncode in (NO_SUCH_PROCESS, NOT_FOUND):
            return False  # not loaded: nothing to stop
        if result.returncode == IO_ERROR and not self.is_loaded():
            return False  # newer macOS says "not loaded" with 5, also a plain I/O error: asked
        if result.returncode not in (0, IN_PROGRESS):  # 36: already draining, wait for it
            self._check(result)
        # launchd kills the daemon at ExitTimeOut (= timeout_s): wait until it let go of it.
        self._wait_unloaded(timeout_s + KILL_WAIT_S)
        return True

    def _bootstrap(self, timeout_s: float) -> None:
        self._check(self.tool.run("enable", self.target))
        plist = str(self.service_file())
        result = self.tool.run("bootstrap", self.domain, plist)
        if result.returncode == IO_ERROR:
            # Already loaded (perhaps from an older plist) or a bootout still draining:
            # take it down, wait until launchd lets go, and try once more.
            self._bootout(timeout_s)
            result = self.tool.run("bootstrap", self.domain, plist)
        self._check(result)
