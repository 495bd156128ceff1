"""Where the Hub is and where its cache lives, read from the environment at call time.

huggingface_hub reads ``HF_*`` variables once, when it is first imported. mlxd reads them
again whenever it needs them and passes the values explicitly, so a pull, a listing and the
daemon all agree with the environment they actually run in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubEnv:
    """The Hub endpoint, the cache directory and whether the network may be used."""

    endpoint: str
    cache_dir: Path
    offline: bool

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> HubEnv:
        """Resolve ``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME`` and ``HF_HUB_OFFLINE`` as huggingface_hub does."""
        env = os.environ if environ is None else environ
        endpoint = (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
        if cache is None:
            xdg = env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
            home = env.get("HF_HOME") or os.path.join(xdg, "huggingface")
            cache = os.path.join(home, "hub")
        offline = (env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or "").strip().lower()
        return cls(
            endpoint=endpoint,
            cache_dir=Path(os.path.expandvars(cache)).expanduser(),
            offline=offline in _TRUE,
        )
