"""Every config test runs isolated: no MLXD_* variables, a temp home, a temp working dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Clear MLXD_* variables, point HOME and XDG_CONFIG_HOME at temp dirs, chdir to a temp dir."""
    for name in list(os.environ):
        if name.upper().startswith("MLXD_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def replace_file(path: Path, text: str) -> None:
    """Save like an editor does: write a temporary file, then rename it over the original."""
    temp = path.with_name(f".{path.name}.swp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)
