"""Download one repo file into the standard HF cache, resuming a partial file.

huggingface_hub writes each download to a process-unique temporary file and deletes it
on failure, so an interrupted pull starts that file again from zero (its issue 4196);
it also buffers 10 MiB between writes, which makes a progress bar jumpy. mlxd keeps the
partial bytes under the blob's stable name, ``blobs/<etag>.incomplete``, streams the rest
with an HTTP Range request through huggingface_hub's own HTTP session (its headers,
token, proxies and error types), and retries a dropped connection from where it stopped.
The finished file is checked against the Hub's checksum (LFS sha256 or git blob id)
before it is renamed to ``blobs/<etag>``; huggingface_hub then links it into the
snapshot as usual, so every other tool sees an ordinary cache entry.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import urlsplit

from mlxd.errors import HubError
from mlxd.hub.errors import is_network_error
from mlxd.hub.files import RemoteFile
from mlxd.hub.progress import PullReporter

#: Blob names come from the server's ETag: allow only what the Hub actually sends.
_SAFE_ETAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}")
PARTIAL_SUFFIX = ".incomplete"

Outcome = Literal["complete", "downloaded", "resumed", "restarted"]


@dataclass(frozen=True)
class Target:
    """Where one repo at one commit lives in the cache."""

    repo_id: str
    commit: str
    endpoint: str
    cache_dir: Path
    storage: Path

    def pointer(self, path: str) -> Path:
        """The snapshot entry of ``path`` (a symlink into ``blobs/`` once complete)."""
        return self.storage / "snapshots" / self.commit / path


#: Attempts per file when the connection drops; reset whenever bytes arrive.
RETRIES = 5


def _stream(
    location: str, headers: dict[str, str], fh: BinaryIO, expected: int, reporter: PullReporter
) -> bool:
    """Append the rest of the file to ``fh``; True when the server ignored the Range and it restarted."""
    from huggingface_hub import constants, get_session, hf_raise_for_status

    restarted = False
    retries = RETRIES
    offset = fh.tell()
    while offset < expected or expected == 0:
        request_headers = {**headers, "Accept-Encoding": "identity"}
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        try:
            with get_session().stream(
                "GET",
                location,
                headers=request_headers,
                follow_redirects=True,
                timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
            ) as response:
                hf_raise_for_status(response)
                if offset and response.status_code != 206:
                    fh.seek(0)
                    fh.truncate()
                    reporter.advance(-offset)
                    offset, restarted = 0, True
                for chunk in response.iter_bytes():
                    fh.write(chunk)
                    offset += len(chunk)
                    reporter.advance(len(chunk))
                    retries = RETRIES
            break
        except Exception as exc:
            if retries == 0 or not is_network_error(exc):
                raise
            retries -= 1
            time.sleep(1)
    if offset != expected:
        raise HubError(
            f"the download was cut short ({offset} of {expected} bytes); the partial file is kept",
            code="hub_unreachable",
            hint="pull again to resume",
        )
    return restarted


def partial_path(target: Target, etag: str) -> Path:
    """The stable name under which an unfinished blob waits to be resumed."""
    return target.storage / "blobs" / f"{etag}{PARTIAL_SUFFIX}"


def _digest_matches(path: Path, remote: RemoteFile) -> bool:
    if remote.sha256:
        digest = hashlib.sha256()
        expected = remote.sha256
    elif remote.blob_id:
        digest = hashlib.sha1(usedforsecurity=False)  # git's blob id, not a security boundary
        digest.update(b"blob %d\0" % path.stat().st_size)
        expected = remote.blob_id
    else:
        return True
    with path.open("rb") as fh:
        while chunk := fh.read(2**20):
            digest.update(chunk)
    return digest.hexdigest() == expected.lower()


def _link(target: Target, remote: RemoteFile) -> None:
    from huggingface_hub import hf_hub_download

    # The blob is in place: huggingface_hub only creates the snapshot entry (or copies
    # it where symlinks are unsupported), exactly as it does for its own downloads.
    hf_hub_download(
        target.repo_id,
        remote.path,
        revision=target.commit,
        cache_dir=target.cache_dir,
        endpoint=target.endpoint,
    )


def _metadata(target: Target, remote: RemoteFile) -> tuple[str, str, int | None, dict[str, str]]:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    url = hf_hub_url(target.repo_id, remote.path, revision=target.commit, endpoint=target.endpoint)
    meta = get_hf_file_metadata(url, endpoint=target.endpoint)
    etag = meta.etag or ""
    if not _SAFE_ETAG.fullmatch(etag):
        raise HubError(f"the Hub sent an unusable ETag for {remote.path}", code="hub_protocol_error")
    headers: dict[str, str] = build_hf_headers()
    location = meta.location or url
    if urlsplit(location).netloc != urlsplit(url).netloc:
        headers.pop("authorization", None)  # a signed CDN URL: never send the token elsewhere
    return etag, location, meta.size, headers


def fetch_file(target: Target, remote: RemoteFile, reporter: PullReporter) -> tuple[Outcome, int]:
    """Make ``remote`` complete in the snapshot; return what happened and the bytes that were already here."""
    if target.pointer(remote.path).exists():
        return "complete", 0
    etag, location, size, headers = _metadata(target, remote)
    expected = size if size is not None else remote.size
    blob = target.storage / "blobs" / etag
    if blob.exists():
        _link(target, remote)
        return "complete", 0

    partial = partial_path(target, etag)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.touch(exist_ok=True)
    offset = partial.stat().st_size
    if offset > expected:
        offset = 0
    reporter.started(remote.path, expected, offset)
    with partial.open("r+b") as fh:
        fh.truncate(offset)
        fh.seek(offset)
        restarted = _stream(location, headers, fh, expected, reporter)
        fh.flush()
        os.fsync(fh.fileno())
    if not _digest_matches(partial, remote):
        partial.unlink(missing_ok=True)
        raise HubError(
            f"{remote.path} does not match the Hub's checksum; the damaged download was discarded",
            code="corrupt_download",
            hint="pull again",
        )
    os.replace(partial, blob)
    _link(target, remote)
    reporter.finished(remote.path)
    outcome: Outcome = "restarted" if restarted else "resumed" if offset else "downloaded"
    return outcome, (0 if restarted else offset)


def partial_bytes(storage: Path, remote: RemoteFile) -> int:
    """Bytes of ``remote`` already in a partial blob, guessing the etag from the tree listing."""
    for etag in (remote.sha256, remote.blob_id):
        if etag and _SAFE_ETAG.fullmatch(etag):
            candidate = storage / "blobs" / f"{etag}{PARTIAL_SUFFIX}"
            if candidate.is_file():
                return candidate.stat().st_size
    return 0


def describe(entry: Any) -> RemoteFile:
    """A ``RemoteFile`` from a huggingface_hub ``RepoFile``."""
    lfs = getattr(entry, "lfs", None)
    sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
    return RemoteFile(
        path=str(entry.path),
        size=int(getattr(entry, "size", 0) or 0),
        blob_id=getattr(entry, "blob_id", None),
        sha256=sha256,
    )
