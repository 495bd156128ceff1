"""The Linux login service: a systemd user unit driven with ``systemctl --user``.

The unit is rendered from ``deploy/systemd/mlxd.service``. systemd's own start limit
(5 failed starts in 2 minutes) ends a crash loop; ``Restart=on-failure`` leaves a clean
stop down.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from mlxd.cli.managers.base import (
    LoginService,
    ServiceSpec,
    ServiceState,
    Tool,
    ToolResult,
    make_dirs,
)
from mlxd.cli.managers.templates import template_path
from mlxd.errors import ServiceManagerError

UNIT = "mlxd.service"
#: ``systemctl`` exits 5 when the unit is not loaded (stopping it is then a no-op).
NOT_LOADED = 5
SHOW_PROPERTIES = "ActiveState,SubState,MainPID,NRestarts"

#: What ``systemctl --user`` says without a user session bus (su, sudo, a cron job, a
#: container, SSH without lingering).
_NO_USER_BUS = ("Failed to connect to bus", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR")
_NO_USER_BUS_HINT = (
    "systemd user services need your login session: run this from a login shell (not su or sudo), "
    "and `loginctl enable-linger $USER` to keep mlxd running after you log out; "
    "or run it without a service with `mlxd start`"
)
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
_NEEDS_QUOTES = re.compile(r"[\s\"'\\;]")


def _escape(text: str) -> str:
    """Escape systemd's specifiers (``%``); every rendered value goes through this."""
    return text.replace("%", "%%")


def quote_word(word: str) -> str:
    """One ExecStart word: ``$`` and ``%`` escaped, double-quoted when it has spaces or quotes."""
    escaped = _escape(word).replace("$", "$$")
    if word and not _NEEDS_QUOTES.search(word):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_assignment(name: str, value: str) -> str:
    """An ``Environment=`` assignment, quoted as a whole so spaces survive."""
    text = f"{name}={value}"
    return '"' + _escape(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(spec: ServiceSpec) -> str:
    """The unit text for ``spec``: the template with each ``@NAME@`` replaced."""
    values = {
        "EXEC_START": " ".join(quote_word(word) for word in spec.argv()),
        "WORKING_DIRECTORY": _escape(str(spec.working_dir)),
        # PATH, then what the installing shell passes on (a user unit does not inherit it).
        "ENV_PATH": " ".join(quote_assignment(n, v) for n, v in (("PATH", spec.path_env), *spec.env)),
        "TIMEOUT_STOP_SEC": str(spec.stop_timeout_s),
    }

    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise ServiceManagerError(f"the unit template has an unknown placeholder {match[0]}")
        return values[match.group(1)]

    return _PLACEHOLDER.sub(fill, template_path("systemd", UNIT).read_text(encoding="utf-8"))


def parse_show(text: str) -> dict[str, str]:
    """``Key=Value`` lines of ``systemctl show`` as a dict."""
    pairs = (line.partition("=") for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, _, value in pairs}


class SystemdManager(LoginService):
    """``~/.config/systemd/user/mlxd.service`` under the user's systemd instance."""

    name = "systemd"

    def __init__(
        self,
        *,
        config_home: Path | None = None,
        systemctl: Tool | None = None,
        journalctl: Tool | None = None,
    ) -> None:
        self._config_home = config_home
        self.systemctl = systemctl or Tool("MLXD_SYSTEMCTL", "systemctl")
        self.journalctl = journalctl or Tool("MLXD_JOURNALCTL", "journalctl")

    def service_file(self) -> Path:
        """``$XDG_CONFIG_HOME/systemd/user/mlxd.service`` (``~/.config`` by default)."""
        base = self._config_home or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return base / "systemd" / "user" / UNIT

    def render(self, spec: ServiceSpec) -> str:
        """The unit text."""
        return render_unit(spec)

    def install(self, spec: ServiceSpec, timeout_s: float) -> Path:
        """Write the unit, reload systemd, enable and start it (restart if it was running)."""
        was_running = self.state().running
        with self.installing(spec) as path:
            self._check(self._ctl("daemon-reload"))
            self._check(self._ctl("enable", "--now", UNIT))
            if was_running:  # enable --now leaves a running daemon on its old command line
                self._check(self._ctl("restart", UNIT, timeout_s=timeout_s))
        return path

    def uninstall(self, timeout_s: float) -> bool:
        """Disable and stop the unit, remove the file, reload systemd."""
        if not self.is_installed():
            return False
        result = self._ctl("disable", "--now", UNIT, timeout_s=timeout_s)
        if result.returncode not in (0, NOT_LOADED):
            self._check(result)
        self.service_file().unlink(missing_ok=True)
        self._ctl("daemon-reload")  # best effort: the unit is gone either way
        return True

    def start(self, spec: ServiceSpec) -> None:
        """``systemctl --user start mlxd.service``."""
        make_dirs(spec)
        self._check(self._ctl("start", UNIT))

    def stop(self, timeout_s: float) -> bool:
        """``systemctl --user stop`` (it waits for the stop job); False when not running."""
        was_running = self.state().running
        result = self._ctl("stop", UNIT, timeout_s=timeout_s)
        if result.returncode == NOT_LOADED:
            return False
        self._check(result)
        return was_running

    def restart(self, spec: ServiceSpec, timeout_s: float) -> None:
        """``systemctl --user restart mlxd.service``."""
        make_dirs(spec)
        self._check(self._ctl("restart", UNIT, timeout_s=timeout_s))

    def state(self) -> ServiceState:
        """``systemctl --user show -p ActiveState,SubState,MainPID,NRestarts``."""
        result = self._ctl("show", "-p", SHOW_PROPERTIES, UNIT)
        if result.returncode != 0:
            return ServiceState(loaded=False, running=False, detail="unknown")
        props = parse_show(result.stdout)
        active = props.get("ActiveState", "unknown")
        pid = int(props["MainPID"]) if props.get("MainPID", "").isdigit() else 0
        detail = f"{active} ({props.get('SubState', '?')})"
        if props.get("NRestarts", "0") not in ("", "0"):
            detail += f", {props['NRestarts']} restarts"
        return ServiceState(
            loaded=active != "inactive",
            running=active == "active" and pid > 0,
            pid=pid or None,
            detail=detail,
        )

    def recorded_argv(self) -> list[str] | None:
        """The installed unit's ExecStart line, as words."""
        try:
            text = self.service_file().read_text(encoding="utf-8")
        except (OSError, ValueError):  # missing, or not UTF-8
            return None
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                try:
                    words = shlex.split(line.removeprefix("ExecStart=").replace("%%", "%"))
                except ValueError:  # a damaged line (an unclosed quote)
                    return None
                return [w.replace("$$", "$") for w in words]
        return None

    def journal_argv(self, lines: int, follow: bool) -> list[str]:
        """``journalctl --user -u mlxd`` for the service's stdout/stderr."""
        argv = [self.journalctl.path, "--user", "-u", "mlxd", "-n", str(lines), "--no-pager"]
        return [*argv, "-f"] if follow else argv

    def _ctl(self, *args: str, timeout_s: float | None = None) -> ToolResult:
        # systemctl itself waits up to TimeoutStopSec and then SIGKILLs: allow for both.
        limit = timeout_s + 10 if timeout_s is not None else None
        return self.systemctl.run("--user", *args, timeout_s=limit)

    def _check(self, result: ToolResult) -> None:
        if result.returncode != 0:
            no_bus = any(sign in result.stderr for sign in _NO_USER_BUS)
            raise ServiceManagerError(result.message(), hint=_NO_USER_BUS_HINT if no_bus else None)
