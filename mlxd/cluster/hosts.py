"""Which machine each rank runs on, checked before anything starts, as ``mlx.launch`` wants it.

``[distributed] hosts`` (or a hostfile from ``mlx.distributed_config``) becomes one
``RankHost`` per rank. Rank 0 must be this machine: it serves HTTP here. Ranks on this
machine are started without ssh (``mlx.launch`` spawns ``127.0.0.1`` directly); the
others over ssh, which is checked first (key-based login, and mlxd's Python at the same
path), so a host that cannot be reached is one clear error in seconds, not a hang.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.config.distributed import DistributedConfig
from mlxd.errors import ConfigError, StartupError, one_line

#: How ``mlx.launch`` names a host it spawns locally instead of over ssh.
LOCAL = "127.0.0.1"
#: Seconds an ssh login may take during the check before the host counts as unreachable.
SSH_CONNECT_TIMEOUT = 5
_SSH_HINT = (
    "mlx.launch starts the other ranks over ssh: set up key-based ssh from this machine to every"
    " host, with mlxd installed at the same path there (README: Several Macs)"
)


@dataclass(frozen=True)
class RankHost:
    """Where one rank runs: the name users wrote, the address the others reach it at."""

    rank: int
    #: The configured name (an IP or an ssh host), as messages and status show it.
    name: str
    #: How ``mlx.launch`` starts it: ``127.0.0.1`` for this machine, else the ssh host.
    ssh: str
    #: Addresses the other ranks connect to (ring, and rank 0's for the control channel).
    ips: tuple[str, ...]
    rdma: tuple[Any, ...] = ()

    @property
    def local(self) -> bool:
        """True when the rank runs on this machine."""
        return self.ssh == LOCAL


@dataclass(frozen=True)
class ClusterPlan:
    """Every rank's host, the backend to launch, and the hostfile's own environment."""

    hosts: tuple[RankHost, ...]
    backend: str
    envs: tuple[str, ...] = field(default=())

    @property
    def size(self) -> int:
        """How many ranks."""
        return len(self.hosts)

    @property
    def names(self) -> tuple[str, ...]:
        """Each rank's host as configured, by rank."""
        return tuple(h.name for h in self.hosts)

    @property
    def control_address(self) -> str:
        """Where the other ranks reach this machine (rank 0's first address)."""
        return self.hosts[0].ips[0]

    def hostfile(self) -> dict[str, Any]:
        """The hostfile ``mlx.launch --hostfile`` reads."""
        return {
            "backend": self.backend,
            "envs": list(self.envs),
            "hosts": [{"ssh": h.ssh, "ips": list(h.ips), "rdma": list(h.rdma)} for h in self.hosts],
        }


def _ip(name: str) -> str | None:
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return None


def _resolve(name: str) -> str | None:
    """An IPv4 address of ``name`` (what the ring backend connects to), if it resolves."""
    if (ip := _ip(name)) is not None:
        return ip
    with contextlib.suppress(OSError):
        return socket.getaddrinfo(name, None, socket.AF_INET)[0][4][0]  # type: ignore[return-value]
    return None


def is_this_machine(address: str) -> bool:
    """True when ``address`` is one of this machine's own: binding to it succeeds."""
    ip = _resolve(address)
    if ip is None:
        return False
    if ipaddress.ip_address(ip).is_loopback:
        return True
    try:
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as sock:
            sock.bind((ip, 0))
        return True
    except OSError:
        return False


def _read_hostfile(path: Path) -> tuple[list[dict[str, Any]], str, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"distributed.hostfile: cannot read {path.name}: {exc}") from None
    backend, envs = "", []
    if isinstance(data, dict):
        backend, envs, data = data.get("backend", ""), data.get("envs", []), data.get("hosts")
    if not isinstance(data, list) or not all(
        isinstance(h, dict) and isinstance(h.get("ssh"), str) for h in data
    ):
        raise ConfigError(f"distributed.hostfile: {path.name} is not an mlx.distributed_config hostfile")
    return data, str(backend or ""), [str(e) for e in envs]


def plan_cluster(config: DistributedConfig) -> ClusterPlan:
    """The ranks' hosts from ``[distributed]``; raises ``ConfigError`` naming what is wrong."""
    envs: list[str] = []
    file_backend = ""
    entries: list[dict[str, Any]]
    if config.hostfile_path is not None:
        entries, file_backend, envs = _read_hostfile(config.hostfile_path)
    else:
        entries = [{"ssh": name, "ips": []} for name in config.hosts]
    backend = config.backend if config.backend != "any" else (file_backend or "ring")
    if len(entries) < 2:
        raise ConfigError("distributed: needs at least two ranks")
    hosts = []
    for rank, entry in enumerate(entries):
        name = entry["ssh"]
        ips = tuple(str(ip) for ip in entry.get("ips") or ())
        if not ips and (resolved := _resolve(name)) is not None:
            ips = (resolved,)
        local = is_this_machine(name) or any(is_this_machine(ip) for ip in ips)
        hosts.append(RankHost(rank, name, LOCAL if local else name, ips, tuple(entry.get("rdma") or ())))
    if backend == "ring" and (bad := [h.name for h in hosts if not h.ips]):
        raise ConfigError(
            f"distributed: cannot resolve {', '.join(bad)} to an IP address (the ring backend needs one)"
        )
    first = hosts[0]
    if not first.local:
        raise ConfigError(f"distributed: rank 0 ({first.name}) must be this machine: it serves HTTP here")
    if not first.ips:
        raise ConfigError(f"distributed: rank 0 ({first.name}) needs an IP address the other ranks reach")
    if any(not h.local for h in hosts) and ipaddress.ip_address(first.ips[0]).is_loopback:
        raise ConfigError(
            f"distributed: rank 0 is {first.name}, which the other machines cannot reach:"
            " name this machine by an address on their network (e.g. its Thunderbolt IP)"
        )
    if backend == "jaccl" and not all(len(h.rdma) == len(hosts) for h in hosts):
        raise ConfigError(
            "distributed: the jaccl backend needs a hostfile from mlx.distributed_config listing the RDMA devices"
        )
    return ClusterPlan(tuple(hosts), backend, tuple(envs))


def _probe(host: str, python: str) -> str | None:
    """Why ``host`` cannot run a rank (None: it can): ssh in, without a password, and find mlxd's Python."""
    command = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={SSH_CONNECT_TIMEOUT}",
        "-o",
        "LogLevel=ERROR",
        host,
        f"test -x {python}",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SSH_CONNECT_TIMEOUT * 3, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return f"cannot reach {host} over ssh (no answer within {SSH_CONNECT_TIMEOUT * 3}s)"
    if done.returncode == 0:
        return None
    if done.returncode == 255:  # ssh's own failure: no route, refused, no key
        said = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        return f"cannot reach {host} over ssh: {one_line(said)}"
    return f"{host} has no {python}: install mlxd at the same path on every host"


def check_reachable(plan: ClusterPlan, python: str = sys.executable) -> None:
    """Every remote host answers ssh and has mlxd's Python; raises ``StartupError`` naming the first that does not."""
    remote = sorted({h.ssh for h in plan.hosts if not h.local})
    if not remote:
        return
    if shutil.which("ssh") is None:
        raise StartupError("ssh is not installed, and the other ranks are started over ssh", hint=_SSH_HINT)
    with ThreadPoolExecutor(max_workers=min(8, len(remote))) as pool:
        problems = [p for p in pool.map(lambda host: _probe(host, python), remote) if p is not None]
    if problems:
        raise StartupError(problems[0], hint=_SSH_HINT)
