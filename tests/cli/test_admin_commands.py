"""``mlxd ps|load|unload|reload`` against a real daemon started with ``mlxd start --demo``."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import Home, run_mlxd

pytestmark = pytest.mark.server


@pytest.fixture
def demo_daemon(stops_daemon: Home) -> Home:
    """A detached daemon with the demo alias, stopped after the test."""
    started = run_mlxd("start", "--demo")
    assert started.returncode == 0, started.stderr
    return stops_daemon


def test_ps_load_unload(demo_daemon: Home) -> None:
    assert json.loads(run_mlxd("ps", "--json").stdout) == []
    assert "no models loaded" in run_mlxd("ps").stdout

    loaded = run_mlxd("load", "demo")
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded demo" in loaded.stdout
    models = json.loads(run_mlxd("ps", "--json").stdout)
    assert [m["alias"] for m in models] == ["demo"]
    assert models[0]["state"] == "loaded"
    assert models[0]["memory_bytes"] > 0
    table = run_mlxd("ps").stdout
    assert "ALIAS" in table
    assert "demo" in table

    unloaded = run_mlxd("unload", "demo")
    assert unloaded.returncode == 0, unloaded.stderr
    assert json.loads(run_mlxd("ps", "--json").stdout) == []

    missing = run_mlxd("load", "no-such-alias")
    assert missing.returncode == 1
    assert "no-such-alias" in missing.stderr
    assert "mlxd models list" in missing.stderr  # the hint for an unknown model
    assert "Traceback" not in missing.stderr


def test_reload_applies_or_exits_78_with_each_problem(demo_daemon: Home) -> None:
    applied = run_mlxd("reload")
    assert applied.returncode == 0, applied.stderr
    assert "generation" in applied.stdout

    good = demo_daemon.config.read_text()
    demo_daemon.config.write_text(good + "\n[runtime]\nmax_loaded_models = 0\nbogus = 1\n")
    rejected = run_mlxd("reload")
    assert rejected.returncode == 78
    lines = rejected.stderr.splitlines()
    assert any("runtime.max_loaded_models" in line for line in lines)
    assert any("runtime.bogus" in line for line in lines)
    assert "old config" in rejected.stderr
    # The daemon kept serving and says why in status.
    status = json.loads(run_mlxd("status", "--json").stdout)
    assert status["running"] is True
    assert status["config"]["last_error"]
