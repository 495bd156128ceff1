"""The CLI's HTTP client for a running daemon (the CLI never imports the daemon).

Answers are decoded strictly into the wire types the daemon encodes
(``mlxd.protocol.admin``); error answers become the ``mlxd.errors`` class their code
names, so the CLI's one error table applies to them as to any other error.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from mlxd.config.schema import MlxdConfig
from mlxd.errors import ConfigError, DaemonNotRunningError, MlxdError, error_for_code
from mlxd.protocol.admin import DaemonStatus, LoadResult, ReloadResult, UnloadResult
from mlxd.supervision import connect_url

T = TypeVar("T")


def daemon_url(config: MlxdConfig) -> str:
    """The base URL the daemon of this config listens on (loopback when bound to all)."""
    return connect_url(config.server.host, config.server.port)


class DaemonClient:
    """A small synchronous client for mlxd's own endpoints."""

    def __init__(self, base_url: str, api_key: str = "", timeout: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; a refused connection becomes ``DaemonNotRunningError``."""
        try:
            return self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            raise DaemonNotRunningError(f"mlxd is not running at {self.base_url}") from exc
        except httpx.TimeoutException as exc:
            raise MlxdError(f"mlxd at {self.base_url} did not answer in time") from exc

    def is_healthy(self, timeout: float | None = None) -> bool:
        """True when ``GET /health`` answers 200 (within ``timeout``, default the client's)."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            return self.request("GET", "/health", **extra).status_code == 200
        except MlxdError:
            return False

    def call(self, method: str, path: str, kind: type[T]) -> T:
        """Send a request and decode its answer as ``kind``; an error answer is raised as
        the ``mlxd.errors`` class its code names (``ConfigError`` with one problem per line
        for a rejected config)."""
        response = self.request(method, path)
        if response.status_code >= 400:
            raise error_from_body(_body(response), response.status_code)
        try:
            return msgspec.json.decode(response.content, type=kind, strict=True)
        except msgspec.DecodeError as exc:
            raise MlxdError(
                f"unexpected answer from {self.base_url}{path}: {exc}",
                hint="the daemon may run another mlxd version; `mlxd restart` runs this one",
            ) from None

    def status(self) -> DaemonStatus:
        """``GET /mlxd/status``."""
        return self.call("GET", "/mlxd/status", DaemonStatus)

    def load_model(self, alias: str) -> LoadResult:
        """``POST /mlxd/models/{alias}/load``."""
        return self.call("POST", f"/mlxd/models/{quote(alias, safe='')}/load", LoadResult)

    def unload_model(self, alias: str) -> UnloadResult:
        """``POST /mlxd/models/{alias}/unload``."""
        return self.call("POST", f"/mlxd/models/{quote(alias, safe='')}/unload", UnloadResult)

    def reload(self) -> ReloadResult:
        """``POST /mlxd/reload``: the new generation, or ``ConfigError`` when rejected (400)."""
        return self.call("POST", "/mlxd/reload", ReloadResult)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


def _body(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _problems(error: dict[str, Any]) -> list[str]:
    """The config problems an error body lists, one line each."""
    items = error.get("problems")
    if not isinstance(items, list):
        return []
    return [str(item.get("message", item)) if isinstance(item, dict) else str(item) for item in items]


def error_from_body(body: Any, status: int) -> MlxdError:
    """The ``mlxd.errors`` exception for an OpenAI-style error body."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or f"HTTP {status}")
    exc = error_for_code(error.get("code"), message)
    if isinstance(exc, ConfigError):
        exc.problems = _problems(error) or [message]
    return exc
