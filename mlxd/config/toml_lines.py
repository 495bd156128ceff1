"""Find the line that defines each key of a TOML document, for error messages.

``tomllib`` gives no positions, so this scans the text: table headers, (dotted, quoted)
keys, and enough of the values (strings, multi-line strings, arrays and inline tables
spanning lines) to never mistake their contents for keys. It only ever runs on text that
``tomllib`` already parsed.
"""

from __future__ import annotations

import re
import tomllib

KeyPath = tuple[str, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map each key path (and each table, implicit ones included) to its 1-based line."""
    explicit: dict[KeyPath, int] = {}
    implicit: dict[KeyPath, int] = {}
    table: KeyPath = ()
    scanner = _ValueScanner()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if scanner.busy:
            scanner.feed(line, 0)
            continue
        start = len(line) - len(line.lstrip())
        if start == len(line) or line[start] == "#":
            continue
        if line[start] == "[":
            double = line.startswith("[[", start)
            keys, _ = _parse_key(line, start + (2 if double else 1))
            table = keys
            _register(keys, lineno, explicit, implicit)
            continue
        keys, end = _parse_key(line, start)
        if not keys:
            continue
        _register(table + keys, lineno, explicit, implicit)
        equals = line.find("=", end)
        if equals >= 0:
            scanner.feed(line, equals + 1)
    return {**implicit, **explicit}


def line_of(lines: dict[KeyPath, int], path: tuple[str | int, ...]) -> int | None:
    """The line of ``path`` or, failing that, of its closest enclosing key or table."""
    keys: list[str] = []
    for part in path:
        if not isinstance(part, str):
            break
        keys.append(part)
    for end in range(len(keys), 0, -1):
        if (found := lines.get(tuple(keys[:end]))) is not None:
            return found
    return None


def _register(keys: KeyPath, lineno: int, explicit: dict[KeyPath, int], implicit: dict[KeyPath, int]) -> None:
    if not keys:
        return
    explicit.setdefault(keys, lineno)
    for end in range(1, len(keys)):
        implicit.setdefault(keys[:end], lineno)


def _parse_key(line: str, pos: int) -> tuple[KeyPath, int]:
    """Parse a possibly dotted, possibly quoted key starting at ``pos``."""
    parts: list[str] = []
    while True:
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos >= len(line):
            break
        char = line[pos]
        if char in "\"'":
            end = _string_end(line, pos)
            if end < 0:
                break
            parts.append(_unquote(line[pos:end]))
            pos = end
        elif match := _BARE.match(line, pos):
            parts.append(match.group())
            pos = match.end()
        else:
            break
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos < len(line) and line[pos] == ".":
            pos += 1
            continue
        break
    return tuple(parts), pos


def _string_end(line: str, pos: int) -> int:
    """Index just past the single-line string starting at ``pos``, or -1."""
    quote = line[pos]
    i = pos + 1
    while i < len(line):
        if quote == '"' and line[i] == "\\":
            i += 2
            continue
        if line[i] == quote:
            return i + 1
        i += 1
    return -1


def _unquote(token: str) -> str:
    try:
        value = tomllib.loads(f"k = {token}")["k"]
    except tomllib.TOMLDecodeError:
        return token.strip("\"'")
    return value if isinstance(value, str) else token


class _ValueScanner:
    """Tracks whether a value continues on the next line (open brackets, multi-line strings)."""

    def __init__(self) -> None:
        self.depth = 0
        self.multiline: str | None = None

    @property
    def busy(self) -> bool:
        """True while inside a value that spans lines."""
        return self.depth > 0 or self.multiline is not None

    def feed(self, line: str, pos: int) -> None:
        """Scan ``line`` from ``pos``, updating the bracket depth and string state."""
        i = pos
        while i < len(line):
            if self.multiline is not None:
                end = self._multiline_end(line, i, self.multiline)
                if end < 0:
                    return
                self.multiline = None
                i = end
                continue
            char = line[i]
            if char == "#":
                return
            if line.startswith(('"""', "'''"), i):
                self.multiline = line[i : i + 3]
                i += 3
            elif char in "\"'":
                end = _string_end(line, i)
                i = end if end > 0 else len(line)
            else:
                if char in "[{":
                    self.depth += 1
                elif char in "]}":
                    self.depth = max(0, self.depth - 1)
                i += 1

    @staticmethod
    def _multiline_end(line: str, pos: int, delimiter: str) -> int:
        i = pos
        while i < len(line):
            if delimiter == '"""' and line[i] == "\\":
                i += 2
                continue
            if line.startswith(delimiter, i):
                end = i + 3
                while end < len(line) and line[end] == delimiter[0]:  # up to two quotes may close it
                    end += 1
                return end
            i += 1
        return -1
