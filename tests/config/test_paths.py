"""Where mlxd keeps its files: macOS's own places whatever XDG variables say, XDG elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlxd.config import paths

XDG = ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp home, with every XDG variable pointing somewhere else (as dotfiles often do)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in XDG:
        monkeypatch.setenv(name, str(tmp_path / "xdg" / name.lower()))
    return tmp_path / "home"


def test_on_a_mac_the_library_whatever_xdg_says(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The LaunchAgent's daemon has no XDG variables: the CLI must find its files where it does."""
    monkeypatch.setattr(sys, "platform", "darwin")
    support = home / "Library" / "Application Support" / "mlxd"
    assert paths.config_dir() == support
    assert paths.state_dir() == support
    assert paths.data_dir() == support
    assert paths.log_dir() == home / "Library" / "Logs" / "mlxd"
    assert paths.cache_dir() == home / "Library" / "Caches" / "mlxd"
    assert paths.user_config_file() == support / "mlxd.toml"


@pytest.mark.skipif(sys.platform == "darwin", reason="the XDG layout is for Linux and the like")
def test_elsewhere_the_xdg_directories(home: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    assert paths.config_dir() == xdg / "xdg_config_home" / "mlxd"
    assert paths.state_dir() == xdg / "xdg_state_home" / "mlxd"
    assert paths.log_dir() == xdg / "xdg_state_home" / "mlxd" / "log"
    assert paths.data_dir() == xdg / "xdg_data_home" / "mlxd"
    assert paths.cache_dir() == xdg / "xdg_cache_home" / "mlxd"
