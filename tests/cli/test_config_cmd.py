"""``mlxd config check|show|path|init|schema``: as real subprocesses for exit codes, CliRunner for the rest."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlxd.cli.app import app
from mlxd.config.loader import load_config
from mlxd.config.schema import MlxdConfig

VALID = '[server]\nport = 8123\n\n[models.qwen]\nmodel = "org/name"\n\n[models.small]\nmodel = "org/small"\n'
INVALID = '[server]\nport = 70000\nportt = 1\n\n[models.qwen]\nmodel = "org/name"\n[models.qwen.defaults]\ntemperature = 5\n'


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean environment: no MLXD_* variables, a temp home and config dir, a temp cwd."""
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
    return dict(os.environ)


def mlxd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlxd", "config", *args],
        env=env,
        cwd=Path.cwd(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["config", *args])
    return result.exit_code, result.output


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- check: exit codes as a real process ---------------------------------------------------


def test_check_valid_exits_0(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "mlxd.toml", VALID)
    done = mlxd("check", str(path), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("valid: 2 aliases")


def test_check_invalid_exits_78_with_each_problem_on_its_line(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "mlxd.toml", INVALID)
    done = mlxd("check", str(path), env=env)
    assert done.returncode == 78
    lines = [line.strip() for line in done.stderr.splitlines()]
    assert "server.port (line 2): Input should be less than or equal to 65535" in lines
    assert "server.portt (line 3): unknown key (did you mean 'port'?)" in lines
    assert "models.qwen.defaults.temperature (line 8): Input should be less than or equal to 2" in lines
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_check_treats_missing_files_the_same_way_for_models_and_adapters(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A local directory nothing will create is an error; a repo not pulled yet only a warning."""
    (tmp_path / "adapters" / "sql").mkdir(parents=True)
    hub_only = write(tmp_path / "hub.toml", '[models.qwen]\nmodel = "org/name"\nadapter = "adapters/sql"\n')
    done = mlxd("check", str(hub_only), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: models.qwen.model: org/name is not downloaded; run `mlxd models pull qwen`"
    ]
    for key, text in [
        ("model", '[models.mine]\nmodel = "./models/mine"\n'),
        ("adapter", '[models.mine]\nmodel = "org/name"\nadapter = "adapters/gone"\n'),
    ]:
        done = mlxd("check", str(write(tmp_path / f"{key}.toml", text)), env=env)
        assert done.returncode == 78
        assert f"models.mine.{key} (line " in done.stderr
        assert f"{key} directory not found" in done.stderr


def test_check_syntax_error_names_the_line(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "mlxd.toml", "[server]\nport = 8080\nport 8081\n")
    done = mlxd("check", str(path), env=env)
    assert done.returncode == 78
    assert "line 3, column" in done.stderr


def test_check_follows_mlxd_config_and_the_option(env: dict[str, str], tmp_path: Path) -> None:
    good = write(tmp_path / "good.toml", VALID)
    bad = write(tmp_path / "bad.toml", INVALID)
    assert mlxd("check", env={**env, "MLXD_CONFIG": str(bad)}).returncode == 78
    assert mlxd("check", env={**env, "MLXD_CONFIG": str(good)}).returncode == 0
    assert mlxd("check", "--config", str(bad), env=env).returncode == 78
    assert mlxd("check", str(good), "--config", str(bad), env=env).returncode == 0  # PATH wins


def test_check_discovers_the_local_file(env: dict[str, str]) -> None:
    write(Path.cwd() / "mlxd.toml", INVALID)
    assert mlxd("check", env=env).returncode == 78


def test_check_without_any_file_validates_the_defaults(env: dict[str, str]) -> None:
    done = mlxd("check", env=env)
    assert done.returncode == 0
    assert "built-in defaults" in done.stdout


def test_check_missing_file_exits_78(env: dict[str, str], tmp_path: Path) -> None:
    done = mlxd("check", str(tmp_path / "missing.toml"), env=env)
    assert done.returncode == 78
    assert "not found" in done.stderr


def test_check_env_override_is_validated_too(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "mlxd.toml", VALID)
    done = mlxd("check", str(path), env={**env, "MLXD_SERVER__PORT": "nope"})
    assert done.returncode == 78
    assert "server.port (from MLXD_SERVER__PORT)" in done.stderr


def test_check_json(env: dict[str, str], tmp_path: Path) -> None:
    good = write(tmp_path / "good.toml", VALID)
    bad = write(tmp_path / "bad.toml", INVALID)
    code, out = cli("check", str(good), "--json")
    assert code == 0
    assert json.loads(out) == {
        "valid": True,
        "path": str(good),
        "aliases": ["qwen", "small"],
        "warnings": [
            "models.qwen.model: org/name is not downloaded; run `mlxd models pull qwen`",
            "models.small.model: org/small is not downloaded; run `mlxd models pull small`",
        ],
    }
    done = mlxd("check", str(bad), "--json", env=env)
    assert done.returncode == 78
    report = json.loads(done.stdout)
    assert report["valid"] is False
    assert len(report["problems"]) == 3


def test_check_warns_of_an_encoder_embedding_model_with_distributed(tmp_path: Path) -> None:
    """Only the model's files say it is an encoder: valid, with a warning (its load is refused)."""
    write(tmp_path / "bge" / "config.json", '{"model_type": "bert"}')
    write(tmp_path / "tiny" / "config.json", '{"model_type": "llama"}')
    aliases = '[models.bge]\nmodel = "./bge"\n[models.tiny]\nmodel = "./tiny"\n'
    alone = write(tmp_path / "alone.toml", aliases)
    split = write(tmp_path / "split.toml", aliases + '[distributed]\nhosts = ["127.0.0.1", "127.0.0.1"]\n')
    code, out = cli("check", str(alone), "--json")
    assert (code, json.loads(out)["warnings"]) == (0, [])
    code, out = cli("check", str(split), "--json")
    assert code == 0
    assert json.loads(out)["warnings"] == [
        "models.bge.model: encoder embedding models are not served across several ranks yet;"
        " serve it from a daemon without [distributed]"
    ]


# -- show ----------------------------------------------------------------------------------


def test_show_marks_environment_values_and_masks_the_key(env: dict[str, str], tmp_path: Path) -> None:
    path = write(
        tmp_path / "mlxd.toml", VALID.replace("port = 8123", 'port = 8123\napi_key = "s3cr3t-v4lue"')
    )
    path.chmod(0o600)
    done = mlxd("show", "--config", str(path), env={**env, "MLXD_SERVER__PORT": "9001"})
    assert done.returncode == 0, done.stderr
    assert "port = 9001  # env MLXD_SERVER__PORT" in done.stdout
    assert 'api_key = "********"' in done.stdout
    assert "s3cr3t-v4lue" not in done.stdout + done.stderr
    assert "[models.qwen]" in done.stdout


def test_show_json_is_stable(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "mlxd.toml", VALID)
    monkeypatch.setenv("MLXD_SERVER__API_KEY", "s3cr3t-v4lue")
    monkeypatch.setenv("MLXD_RUNTIME__KEEP_ALIVE", "1h")
    code, out = cli("show", "--json", "--config", str(path))
    assert code == 0
    assert "s3cr3t-v4lue" not in out
    shown = json.loads(out)
    assert sorted(shown) == ["config", "environment", "path"]
    assert shown["path"] == str(path)
    assert shown["environment"] == {
        "server.api_key": "MLXD_SERVER__API_KEY",
        "runtime.keep_alive": "MLXD_RUNTIME__KEEP_ALIVE",
    }
    config = shown["config"]
    assert config["server"]["api_key"] == "********"
    assert config["server"]["port"] == 8123
    assert config["runtime"]["keep_alive"] == "1h"
    assert sorted(config["models"]) == ["qwen", "small"]


def test_show_output_is_a_loadable_config(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "mlxd.toml", VALID.replace("port = 8123", 'port = 8123\nkeep_alive = "x"'))
    code, out = cli("show", "--config", str(write(tmp_path / "ok.toml", VALID)))
    assert code == 0
    echoed = write(tmp_path / "echoed.toml", out)
    assert load_config(echoed) == load_config(tmp_path / "ok.toml")
    assert cli("show", "--config", str(path))[0] == 78  # an invalid config is reported, not shown


# -- path ----------------------------------------------------------------------------------


def test_path_prints_the_discovered_file_and_says_why(env: dict[str, str], tmp_path: Path) -> None:
    local = write(Path.cwd() / "mlxd.toml", VALID)
    done = mlxd("path", env=env)
    assert done.returncode == 0
    assert done.stdout.strip() == str(local)
    # In a directory with its own mlxd.toml (a clone of mlxd), say that it is not the user's.
    user = tmp_path / "home" / ".config" / "mlxd" / "mlxd.toml"
    assert done.stderr.startswith("note: ./mlxd.toml in the current directory is used here")
    assert str(user) in done.stderr
    write(user, VALID)
    local.unlink()
    done = mlxd("path", env=env)
    assert (done.stdout.strip(), done.stderr) == (str(user), "")


def test_path_without_a_file_says_defaults_and_where_it_looked(env: dict[str, str], tmp_path: Path) -> None:
    done = mlxd("path", env=env)
    assert done.returncode == 0
    assert "built-in defaults" in done.stdout
    assert str(tmp_path / "home" / ".config" / "mlxd" / "mlxd.toml") in done.stdout
    assert str(Path.cwd() / "mlxd.toml") in done.stdout


def test_path_json(env: dict[str, str], tmp_path: Path) -> None:
    user = write(tmp_path / "home" / ".config" / "mlxd" / "mlxd.toml", VALID)
    code, out = cli("path", "--json")
    assert code == 0
    shown = json.loads(out)
    assert (shown["path"], shown["exists"], shown["source"]) == (str(user), True, "user config")
    assert shown["searched"] == [str(Path.cwd() / "mlxd.toml"), str(user)]


# -- init ----------------------------------------------------------------------------------


def test_init_writes_a_valid_private_starter_in_the_user_dir(env: dict[str, str], tmp_path: Path) -> None:
    done = mlxd("init", env=env)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "home" / ".config" / "mlxd" / "mlxd.toml"
    assert str(target) in done.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert load_config(target) == MlxdConfig()
    assert mlxd("check", env=env).returncode == 0  # and discovery now finds it


def test_init_refuses_to_overwrite_without_force(env: dict[str, str], tmp_path: Path) -> None:
    target = write(tmp_path / "conf" / "mine.toml", "# mine\n")
    done = mlxd("init", str(target), env=env)
    assert done.returncode == 1
    assert "--force" in done.stderr
    assert target.read_text(encoding="utf-8") == "# mine\n"
    assert mlxd("init", str(target), "--force", env=env).returncode == 0
    assert "[server]" in target.read_text(encoding="utf-8")


def test_init_creates_parent_directories(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "mlxd.toml"
    code, _ = cli("init", str(target))
    assert code == 0
    assert load_config(target).models == {}


# -- schema --------------------------------------------------------------------------------


def test_schema_prints_the_models_json_schema(env: dict[str, str]) -> None:
    done = mlxd("schema", env=env)
    assert done.returncode == 0
    assert json.loads(done.stdout) == MlxdConfig.model_json_schema()
