"""One model's view of the disk prompt cache: its identity and the shape its cache must
have, so its prompt cache offers and reads files without knowing about other models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from mlxd.runtime.mlx.prompt_files import Signature


class PromptFiles(Protocol):
    """What a tier needs of ``prompt_disk.DiskPromptCache`` (which imports this module, so
    the tier names it by this protocol)."""

    def offer(
        self, identity: str, signature: Signature | None, tokens: list[int], layers: list[Any]
    ) -> None: ...

    def load(
        self, identity: str, signature: Signature | None, tokens: list[int], better_than: int
    ) -> tuple[list[Any], list[int]] | None: ...


@dataclass(slots=True)
class DiskTier:
    """One model's view of the disk: its identity and the shape its cache must have."""

    disk: PromptFiles
    identity: str
    signature: Signature | None

    def offer(self, tokens: list[int], layers: list[Any]) -> None:
        """Keep a finished sequence's cache on disk too (see ``DiskPromptCache.offer``)."""
        self.disk.offer(self.identity, self.signature, tokens, layers)

    def load(self, tokens: list[int], better_than: int) -> tuple[list[Any], list[int]] | None:
        """A file's cache sharing more than ``better_than`` tokens with ``tokens``."""
        return self.disk.load(self.identity, self.signature, tokens, better_than)
