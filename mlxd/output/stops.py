"""Stop strings matched on decoded text, wherever token boundaries fall.

Text that could be the start of a stop string is held back until the next piece
shows whether it is; the stop string itself never reaches the client.
"""

from __future__ import annotations


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``marker``: text
    that must be held back until the next piece shows whether the marker follows."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class StopMatcher:
    """Feed decoded text; get back what may be emitted and whether a stop string matched."""

    __slots__ = ("_pending", "_stops", "matched")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        #: The stop string that matched, once one did.
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        """Return ``(text to emit, stopped)``; after a stop, nothing more should be fed."""
        if not self._stops:
            return text, False
        buffer = self._pending + text
        cut = -1
        for stop in self._stops:
            at = buffer.find(stop)
            if at != -1 and (cut == -1 or at < cut):
                cut, self.matched = at, stop
        if cut != -1:
            self._pending = ""
            return buffer[:cut], True
        hold = max(partial_suffix(buffer, stop) for stop in self._stops)
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """The held-back text, released when generation ends without a stop."""
        pending, self._pending = self._pending, ""
        return pending
