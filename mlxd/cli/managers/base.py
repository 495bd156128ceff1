"""What every way of running the daemon in the background offers, and the shared parts.

A ``ServiceManager`` starts, stops, restarts and inspects the daemon; a ``LoginService``
(launchd, systemd) is also installed as a file and therefore renders, installs and
uninstalls. The CLI commands depend on this interface only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mlxd.errors import ServiceManagerError
from mlxd.supervision.stopping import stop_timeout_s

#: Seconds for a killed daemon to be gone: waits for a stop allow this much beyond the
#: stop timeout, at which the CLI or the login service sends SIGKILL.
KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class ServiceSpec:
    """How to run ``mlxd serve``: everything a plist, a unit or a detached spawn needs."""

    python: Path
    config: Path | None
    working_dir: Path
    log_dir: Path
    path_env: str
    drain_timeout_s: float = 30.0
    demo: bool = False
    #: Variables of the installing shell the daemon must see too (``passed_environment``).
    env: tuple[tuple[str, str], ...] = ()

    def serve_options(self) -> list[str]:
        """The options after ``mlxd serve``: an absolute config path, maybe ``--demo``."""
        options = ["--config", str(self.config)] if self.config is not None else []
        return [*options, "--demo"] if self.demo else options

    def argv(self) -> list[str]:
        """The whole command line; the interpreter path is absolute, never a bare name."""
        return [str(self.python), "-m", "mlxd", "serve", *self.serve_options()]

    @property
    def stop_timeout_s(self) -> int:
        """How long a stop may take before the daemon is killed: what the CLI waits, launchd's
        ``ExitTimeOut`` and systemd's ``TimeoutStopSec`` (all from the drain timeout)."""
        return stop_timeout_s(self.drain_timeout_s)


def make_dirs(spec: ServiceSpec) -> None:
    """The working and log directories the service file names: a service manager does not
    create them, and a job whose directory was cleaned away (a cleaner app, by hand) would
    not start."""
    for directory in (spec.working_dir, spec.log_dir):
        directory.mkdir(parents=True, exist_ok=True)


#: Where the Hub cache is and which Hub: a model pulled under the shell's ``HF_HOME`` must
#: be found by the daemon, which a login service starts without the shell's environment.
_HUB_VARIABLES = (
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "XDG_CACHE_HOME",
)
#: Never written into a service file, which other users may be able to read.
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|AUTH", re.IGNORECASE)


def passed_environment(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """What the service must carry from the installing shell: the Hub's location and the
    ``MLXD_SECTION__KEY`` settings the CLI itself reads (``MLXD_SERVER__PORT`` moves the port
    the CLI waits on too), secrets left out."""
    names = sorted(
        name
        for name in environ
        if (name in _HUB_VARIABLES or (name.startswith("MLXD_") and "__" in name))
        and not _SECRET.search(name)
    )
    return tuple((name, environ[name]) for name in names)


def default_path_env(python: Path) -> str:
    """An explicit PATH for the service: the interpreter's bin dir first, then the usual ones.

    launchd starts jobs with ``/usr/bin:/bin:/usr/sbin:/sbin`` only, so tools installed by
    Homebrew or next to the interpreter would not be found without this.
    """
    dirs = [str(python.parent)]
    if sys.platform == "darwin":
        dirs += ["/opt/homebrew/bin", "/opt/homebrew/sbin"]
    dirs += ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
    return ":".join(dict.fromkeys(dirs))


def build_spec(
    config: Path | None,
    *,
    demo: bool = False,
    drain_timeout_s: float = 30.0,
    working_dir: Path | None = None,
    log_dir: Path | None = None,
) -> ServiceSpec:
    """A spec for this interpreter with absolute paths (launchd expands nothing)."""
    from mlxd.config import paths

    # Not resolve(): a virtualenv's python is a symlink whose target lacks the venv.
    python = Path(sys.executable).absolute()
    return ServiceSpec(
        python=python,
        config=config.expanduser().resolve() if config is not None else None,
        working_dir=(working_dir or paths.state_dir()).absolute(),
        log_dir=(log_dir or paths.log_dir()).absolute(),
        path_env=default_path_env(python),
        drain_timeout_s=drain_timeout_s,
        demo=demo,
        env=passed_environment(os.environ),
    )


@dataclass(frozen=True)
class ServiceState:
    """What a manager knows about the daemon it runs (confirm with GET /health)."""

    loaded: bool
    running: bool
    pid: int | None = None
    last_exit: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one launchctl / systemctl / journalctl call."""

    argv: Sequence[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    def message(self) -> str:
        """The tool's own words, for an error line."""
        text = (self.stderr or self.stdout).strip().splitlines()
        words = text[-1] if text else f"exit code {self.returncode}"
        return f"`{' '.join(self.argv[1:])}` failed: {words}"


@dataclass
class Tool:
    """An external program at an overridable path (tests put a recording shim there)."""

    env_var: str
    default: str
    timeout_s: float = 60.0
    calls: list[ToolResult] = field(default_factory=list)

    @property
    def path(self) -> str:
        """``$<env_var>`` if set, else the program's usual name looked up on PATH."""
        return os.environ.get(self.env_var) or self.default

    def run(self, *args: str, timeout_s: float | None = None) -> ToolResult:
        """Run the tool; a missing binary is a ``ServiceManagerError`` with a hint."""
        argv = [self.path, *args]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout_s or self.timeout_s,
                check=False,
            )
        except FileNotFoundError:
            raise ServiceManagerError(
                f"{self.default} not found",
                hint="run the daemon as a detached process with `mlxd start` instead",
            ) from None
        except subprocess.TimeoutExpired:
            raise ServiceManagerError(f"`{' '.join(args)}` did not finish in time") from None
        result = ToolResult(argv, done.returncode, done.stdout, done.stderr)
        self.calls.append(result)
        return result


def poll_until(check: Callable[[], bool], timeout_s: float, interval_s: float) -> bool:
    """Call ``check`` until it is true or ``timeout_s`` has passed; return the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def config_from_argv(argv: object) -> Path | None:
    """The value after ``--config`` in a recorded command line."""
    if not isinstance(argv, list):
        return None
    for option, value in itertools.pairwise(argv):
        if option == "--config" and isinstance(value, str):
            return Path(value)
    return None


class ServiceManager(ABC):
    """Starts, stops and inspects the daemon in the background."""

    name: ClassVar[str]
    #: Seconds between polls while waiting for a state change.
    poll_interval_s: float = 0.25

    @abstractmethod
    def start(self, spec: ServiceSpec) -> None:
        """Have the daemon started; returns before it is healthy."""

    @abstractmethod
    def stop(self, timeout_s: float) -> bool:
        """Stop the daemon gracefully and wait for it; False when it was not running."""

    @abstractmethod
    def restart(self, spec: ServiceSpec, timeout_s: float) -> None:
        """Stop (gracefully) and start again."""

    @abstractmethod
    def state(self) -> ServiceState:
        """What the manager reports about the daemon."""

    @abstractmethod
    def recorded_config(self) -> Path | None:
        """The config file the managed daemon runs with, when the manager recorded one."""


def gone(program: Path) -> str:
    """How a missing interpreter is named: a virtualenv's ``python3`` is a link to the Python
    it was made from, which may be what went away (``ls`` still shows the link)."""
    if program.is_symlink():
        return f"{program}, whose Python ({os.path.realpath(program)}) no longer exists"
    return f"{program}, which no longer exists"


class LoginService(ServiceManager):
    """A service manager that starts the daemon at login from a file it owns."""

    @abstractmethod
    def service_file(self) -> Path:
        """Where the rendered plist / unit lives."""

    def is_installed(self) -> bool:
        """True when the service file exists."""
        return self.service_file().is_file()

    @abstractmethod
    def recorded_argv(self) -> list[str] | None:
        """The command line the installed file runs, if it can be read."""

    def recorded_config(self) -> Path | None:
        """The ``--config`` on the installed command line."""
        return config_from_argv(self.recorded_argv())

    def missing_program(self) -> Path | None:
        """The interpreter the installed file runs when it no longer exists (the virtualenv
        was removed or moved, the Python it was made from upgraded away): the service
        cannot start until ``mlxd install`` writes it again."""
        argv = self.recorded_argv()
        if not argv:
            return None
        program = Path(argv[0])
        return None if program.exists() else program

    def check_program(self) -> None:
        """Raise ``ServiceManagerError`` when the installed interpreter is gone."""
        if (program := self.missing_program()) is not None:
            raise ServiceManagerError(
                f"the {self.name} service runs {gone(program)}",
                hint="run `mlxd install` again with the mlxd you use now",
            )

    @abstractmethod
    def render(self, spec: ServiceSpec) -> str:
        """The service file's text for ``spec``."""

    @abstractmethod
    def install(self, spec: ServiceSpec, timeout_s: float) -> Path:
        """Write the file and load it (which starts the daemon); return the file's path."""

    def uninstall(self, timeout_s: float) -> bool:
        """Stop, unload and remove the service; False when it was not installed."""
        if not self.is_installed():
            return False
        self.stop(timeout_s)
        self.service_file().unlink(missing_ok=True)
        return True

    def write_file(self, spec: ServiceSpec) -> tuple[Path, bool]:
        """Render and write the file, creating the dirs it names; return (path, existed)."""
        path = self.service_file()
        existed = path.is_file()
        text = self.render(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        make_dirs(spec)
        path.write_text(text, encoding="utf-8")
        # Not the umask's: a group- or world-writable agent is one launchd may refuse.
        path.chmod(0o644)
        return path, existed

    @contextlib.contextmanager
    def installing(self, spec: ServiceSpec) -> Iterator[Path]:
        """Write the file for the block's commands; undo a new file if they fail.

        A half-done install must not leave a file that makes start and stop use this
        service manager; a file that was there before stays.
        """
        path, existed = self.write_file(spec)
        try:
            yield path
        except ServiceManagerError:
            if not existed:
                path.unlink(missing_ok=True)
            raise
