"""Can ``mlxd serve`` listen where its config says? Asked before the daemon is built.

uvicorn discovers a taken port only after the runtime is up, and then logs a line and
exits 1, which under launchd or a detached start reaches nobody. Binding a throwaway
socket first (with ``SO_REUSEADDR``, as uvicorn binds) turns every such failure into one
line that says what to change.
"""

from __future__ import annotations

import errno
import socket

from mlxd import supervision
from mlxd.errors import StartupError


def check_listenable(host: str, port: int) -> None:
    """Raise ``StartupError`` with a one-line reason and what to do when ``host:port`` cannot
    be listened on now (port 0 picks a free port: nothing to check)."""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise StartupError(
            f"cannot listen on {host!r}: the name does not resolve: set [server] host (or --host)"
        ) from exc
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise StartupError(_why(exc, host, port)) from exc


def _why(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        pid = supervision.listening_pid(port)
        by = f" by pid {pid}" if pid is not None else ""
        return f"port {port} is in use{by}: set [server] port or stop it"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: no such address on this machine: set [server] host"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on port {port}: set [server] port to 1024 or above"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}: check [server] host and port"
