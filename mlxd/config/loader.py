"""Find, read and validate ``mlxd.toml`` into one frozen ``MlxdConfig``.

Precedence, highest first: ``overrides`` (command-line flags) > ``MLXD_SECTION__KEY``
environment variables > the file > built-in defaults. Every failure is a ``ConfigError``
whose ``problems`` name the key path and where the bad value came from (file line,
environment variable or command line), one line each, never a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource, SettingsError

from mlxd.config.chat_template import TemplateProblem, read_template
from mlxd.config.paths import CONFIG_FILENAME, user_config_file
from mlxd.config.problems import Layers, format_problems, key_label, locate, one_line
from mlxd.config.schema import MlxdConfig
from mlxd.config.sources import file_layer
from mlxd.config.toml_lines import key_lines
from mlxd.errors import ConfigError

log = logging.getLogger("mlxd.config")

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def config_search_paths() -> list[Path]:
    """Where discovery looks when neither ``--config`` nor ``MLXD_CONFIG`` is given, in order."""
    return [Path.cwd() / CONFIG_FILENAME, user_config_file()]


def discover_config_path(explicit: Path | None = None) -> Path | None:
    """``--config``, then ``$MLXD_CONFIG``, then ``./mlxd.toml``, then the user config dir."""
    return discover_config(explicit)[0]


def discover_config(explicit: Path | None = None) -> tuple[Path | None, str]:
    """The config file discovery picks, and why: ``option``, ``environment`` (MLXD_CONFIG),
    ``working directory`` (./mlxd.toml), ``user config`` or ``none``."""
    if explicit is not None:
        return explicit.expanduser(), "option"
    if env := os.environ.get("MLXD_CONFIG"):
        return Path(env).expanduser(), "environment"  # launchd expands nothing: "~" may arrive
    local, user = config_search_paths()
    if local.is_file():
        return local, "working directory"
    if user.is_file():
        return user, "user config"
    return None, "none"


def read_config_file(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file into its table and text; a syntax error names its line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a file: {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file is not UTF-8 text: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if match := _TOML_POSITION.search(message):
            where = f"line {match[1]}, column {match[2]}"
            message = message[: match.start()]
        else:
            where = "end of file" if "end of document" in message else "somewhere"
            message = re.sub(r"\s*\(at end of document\)\s*$", "", message)
        raise ConfigError(f"{path} is not valid TOML", problems=[f"{where}: {message}"]) from None


def environment_layer() -> dict[str, Any]:
    """The nested values that ``MLXD_*`` environment variables set (what beats the file)."""
    try:
        return EnvSettingsSource(MlxdConfig)()
    except SettingsError as exc:
        raise _environment_error(exc) from None


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> MlxdConfig:
    """Read and validate a config file (``None``: built-in defaults) under env and ``overrides``."""
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    if path is not None:
        data, text = read_config_file(path)
        lines = key_lines(text)
        _warn_if_key_exposed(path, data)
    overrides = dict(overrides or {})
    if unknown := [key for key in overrides if key not in MlxdConfig.model_fields]:
        # Never let a key reach BaseSettings' own "_env_prefix"-style init parameters.
        raise _invalid(
            path, [one_line(f"{key_label((key,))} (command line): unknown key") for key in unknown]
        )
    layers = Layers(file=data, env=environment_layer(), overrides=overrides, lines=lines)
    try:
        with file_layer(data):
            config = MlxdConfig(**overrides)
    except ValidationError as exc:
        raise _invalid(path, format_problems(exc, layers)) from None
    except SettingsError as exc:
        raise _environment_error(exc) from None
    base = path.parent.resolve() if path is not None else Path.cwd()
    config.runtime.bind(base)
    for model in config.models.values():
        model.bind(base)
    if config.distributed is not None:
        config.distributed.bind(base)
    if problems := _missing_directories(config, layers) + _chat_templates(config, layers):
        raise _invalid(path, problems)
    return config


def describe(error: ConfigError) -> str:
    """One readable line for an invalid config: the message and every problem."""
    if error.problems == [error.message]:
        return error.message
    return f"{error.message}: {'; '.join(error.problems)}"


def _invalid(path: Path | None, problems: list[str]) -> ConfigError:
    where = f"invalid config in {path}" if path is not None else "invalid config"
    return ConfigError(where, problems=problems)


def _missing_directories(config: MlxdConfig, layers: Layers) -> list[str]:
    """Local model and adapter directories are never made on the fly, so a missing one is a
    config error (a repo id not downloaded yet is not: ``mlxd models pull`` fetches it)."""
    problems = []
    for alias, model in config.models.items():
        draft = model.draft if model.draft_model not in config.models else None
        for key, value, path in (
            ("model", model.model, model.local_path),
            ("adapter", model.adapter, model.adapter_path),
            ("draft_model", model.draft_model, draft.local_path if draft is not None else None),
        ):
            if value is None or path is None or _is_dir(path):
                continue
            where = locate(("models", alias, key), layers)
            label = key_label(("models", alias, key))
            problems.append(one_line(f"{label}{where}: {key} directory not found: {value}"))
    return problems


def _chat_templates(config: MlxdConfig, layers: Layers) -> list[str]:
    """Each alias's ``chat_template`` file, read and proven to render (the text is kept)."""
    problems = []
    for alias, model in config.models.items():
        path = model.chat_template_path
        if path is None:
            continue
        try:
            model.attach_template(read_template(path))
        except TemplateProblem as exc:
            where = locate(("models", alias, "chat_template"), layers)
            label = key_label(("models", alias, "chat_template"))
            problems.append(one_line(f"{label}{where}: chat template {model.chat_template}: {exc}"))
    return problems


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, RuntimeError, ValueError):
        return False


def _environment_error(exc: SettingsError) -> ConfigError:
    field = re.search(r'field "([^"]+)"', str(exc))
    prefix = f"MLXD_{field[1]}".upper() if field else "MLXD_"
    names = sorted(name for name in os.environ if name.upper().startswith(prefix))
    culprits = ", ".join(names) or "an MLXD_* variable"
    return ConfigError(
        "invalid config in the environment",
        problems=[
            one_line(f"{culprits}: cannot parse the value; lists and tables must be JSON, e.g. '[\"a\"]'")
        ],
    )


def _warn_if_key_exposed(path: Path, data: Mapping[str, Any]) -> None:
    server = data.get("server")
    key = server.get("api_key") if isinstance(server, Mapping) else None
    if os.name != "posix" or not isinstance(key, str) or not key:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "%s holds server.api_key but is readable by other users (mode %s); run: chmod 600 %s",
            path,
            stat.filemode(mode),
            path,
        )
