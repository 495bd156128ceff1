"""Turn huggingface_hub and network exceptions into one-line ``HubError``s with a hint.

This is the boundary: nothing foreign escapes ``mlxd.hub``. Classes are matched by name
along the MRO so the mapping holds across huggingface_hub versions (and their HTTP
client, httpx or its successor).
"""

from __future__ import annotations

import errno
import re

from mlxd.errors import HubError

_NETWORK_MODULES = frozenset({"httpx", "httpx2", "httpcore", "requests", "urllib3"})
_AUTH_HINT = "set HF_TOKEN to a token that can read it (and accept the model's terms on the Hub)"
#: While a file is written into the cache: a path in it is a file, or its volume is read-only
#: (a permission error could be about a token or certificate file, so it is not mapped).
_UNWRITABLE = frozenset({errno.ENOTDIR, errno.EROFS})


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def is_network_error(exc: BaseException) -> bool:
    """True for a transport failure (refused, reset, timed out), not for an HTTP status."""
    if "HfHubHTTPError" in _names(exc) or _status(exc) is not None:
        return False
    return any(cls.__module__.split(".")[0] in _NETWORK_MODULES for cls in type(exc).__mro__)


def translate(exc: BaseException, repo_id: str, revision: str, endpoint: str) -> HubError | None:
    """The ``HubError`` for a foreign exception raised while talking to the Hub, or None if unknown."""
    names = _names(exc)
    if "OfflineModeIsEnabled" in names:
        return HubError(
            f"HF_HUB_OFFLINE is set and {repo_id} is not complete in the cache",
            code="offline",
            hint="unset HF_HUB_OFFLINE to download it",
        )
    if "GatedRepoError" in names:
        return HubError(f"{repo_id} is gated: your token may not download it", code="gated", hint=_AUTH_HINT)
    if "RevisionNotFoundError" in names:
        return revision_not_found(repo_id, revision)
    if "RepositoryNotFoundError" in names:
        return HubError(
            f"repo {repo_id} not found on {endpoint}",
            code="repo_not_found",
            hint=f"check the name; if it is private, {_AUTH_HINT}",
        )
    if "DisabledRepoError" in names:
        return HubError(f"{repo_id} has been disabled on the Hub", code="repo_disabled")
    status = _status(exc)
    if status in {401, 403}:
        return HubError(
            f"the Hub refused access to {repo_id} (HTTP {status})", code="unauthorized", hint=_AUTH_HINT
        )
    if status == 429:
        return HubError(
            "the Hub is rate-limiting this machine (HTTP 429)",
            code="rate_limited",
            hint="wait a minute and retry",
        )
    if status is not None:
        return HubError(
            f"the Hub answered HTTP {status} for {repo_id}", code="hub_http_error", hint="retry later"
        )
    if isinstance(exc, OSError) and exc.errno in {errno.ENOSPC, errno.EDQUOT}:
        return disk_full()
    if "JSONDecodeError" in names:
        return HubError(
            f"{endpoint} did not answer as a Hugging Face Hub (its reply is not JSON)",
            code="hub_protocol_error",
            hint="check HF_ENDPOINT: the Hub (https://huggingface.co) or a mirror of it",
        )
    if isinstance(exc, OSError) and exc.errno in _UNWRITABLE:
        return cache_unwritable(exc)
    if is_network_error(exc):
        first = (str(exc).strip().splitlines() or [""])[0]
        what = re.sub(r"^\[Errno -?\d+\]\s*", "", first).strip().lower() or type(exc).__name__
        if "Timeout" in " ".join(names):
            what = "timed out"
        return HubError(
            f"cannot reach the Hub at {endpoint} ({what})",
            code="hub_unreachable",
            hint="check your network and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use cached models only",
        )
    return None


def revision_not_found(repo_id: str, revision: str) -> HubError:
    """The error for a branch, tag or commit the repo does not have."""
    return HubError(
        f"revision {revision!r} not found in {repo_id}",
        code="revision_not_found",
        hint="use a branch, tag or full commit hash of the repo, or leave --revision out for main",
    )


def disk_full() -> HubError:
    """The error for a cache volume that ran out of space mid-download."""
    return HubError(
        "disk full while downloading; the partial file is kept for resuming",
        code="disk_full",
        hint="free some space (or point HF_HUB_CACHE at a bigger volume), then pull again",
    )


def cache_unwritable(exc: OSError) -> HubError:
    """The Hugging Face cache cannot take the download (a path in it is a file, or read-only)."""
    where = f": {exc.filename}" if exc.filename else ""
    return HubError(
        f"cannot write to the Hugging Face cache ({(exc.strerror or type(exc).__name__).lower()}{where})",
        code="cache_unwritable",
        hint="check HF_HUB_CACHE (or HF_HOME): it must be a directory you can write",
    )
