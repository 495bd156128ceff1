"""Service managers: which one runs the daemon, and how to pick it.

``install`` picks the platform's login service (launchd on macOS, systemd on Linux)
unless told otherwise. ``start``/``stop``/``status`` use the login service whose file
is installed, else the detached-process backend.
"""

from __future__ import annotations

import sys

from mlxd.cli.managers.base import LoginService, ServiceManager, ServiceSpec, ServiceState
from mlxd.errors import ServiceManagerError

LOGIN_SERVICES = ("launchd", "systemd")

__all__ = [
    "LOGIN_SERVICES",
    "LoginService",
    "ServiceManager",
    "ServiceSpec",
    "ServiceState",
    "installed_login_service",
    "login_service",
    "platform_login_service",
]


def platform_login_service() -> str | None:
    """The login service this platform has: launchd on macOS, systemd on Linux."""
    if sys.platform == "darwin":
        return "launchd"
    if sys.platform.startswith("linux"):
        return "systemd"
    return None


def login_service(name: str) -> LoginService:
    """The login-service backend called ``name``."""
    if name == "launchd":
        from mlxd.cli.managers.launchd import LaunchdManager

        return LaunchdManager()
    if name == "systemd":
        from mlxd.cli.managers.systemd import SystemdManager

        return SystemdManager()
    raise ServiceManagerError(f"unknown service manager {name!r} (use launchd or systemd)")


def installed_login_service() -> LoginService | None:
    """The login service whose file is installed (the platform's own first), if any."""
    preferred = platform_login_service()
    for name in sorted(LOGIN_SERVICES, key=lambda n: n != preferred):
        manager = login_service(name)
        if manager.is_installed():
            return manager
    return None
