"""Which daemon a command talks to when its config file is broken."""

from __future__ import annotations

import pytest

from mlxd.cli.target import resolve
from mlxd.errors import ConfigError
from tests.cli.conftest import Home


def test_a_typo_elsewhere_keeps_the_server_table_the_daemon_took(home: Home) -> None:
    """The file is no longer TOML (a half-written alias): the CLI still reaches the daemon
    with the port and API key the daemon took from it."""
    home.config.write_text(
        f'[server]  # mine\nport = {home.port}\napi_key = "sk-test-123"\n\n[models.broken\nmodel = "x"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError):
        resolve(home.config, strict=True)
    target = resolve(home.config, strict=False)
    assert target.error is not None
    assert target.config.server.port == home.port
    assert target.config.server.api_key.get_secret_value() == "sk-test-123"


def test_a_broken_server_table_falls_back_to_the_defaults(home: Home) -> None:
    home.config.write_text('[server\nport = 1\napi_key = "sk-test-123"\n', encoding="utf-8")
    target = resolve(home.config, strict=False)
    assert target.error is not None
    assert target.config.server.api_key.get_secret_value() == ""
