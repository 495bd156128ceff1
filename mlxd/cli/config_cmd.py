"""``mlxd config``: check, show, path, init and schema.

Thin commands over ``mlxd.config``: they never talk to a daemon, so they work whether
or not one runs. Errors go through the CLI's one error table (exit 78 for a bad config).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlxd.cli.errors import exit_code_for
from mlxd.cli.options import ConfigOption, JsonOption
from mlxd.errors import ConfigError, HubError, MlxdError

if TYPE_CHECKING:
    from mlxd.config.schema import MlxdConfig

app = typer.Typer(help="Check, show and create the config file.", no_args_is_help=True)

PathArgument = Annotated[
    Path | None,
    typer.Argument(help="Config file (default: --config, $MLXD_CONFIG, then discovery).", dir_okay=False),
]
InitPathArgument = Annotated[
    Path | None,
    typer.Argument(
        help="Where to write it (default: --config, $MLXD_CONFIG, else the user config file).", dir_okay=False
    ),
]
MASK = "********"


@app.command()
def check(path: PathArgument = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Validate a config file.

    Exit status 0 when valid, 78 with every problem listed when not.
    """
    from mlxd.config.loader import discover_config_path, load_config

    target = path or discover_config_path(config)
    try:
        loaded = load_config(target)
    except ConfigError as error:
        if not as_json:
            raise
        _echo_json(
            {"valid": False, "path": _text(target), "error": error.message, "problems": error.problems}
        )
        raise SystemExit(exit_code_for(error)) from None
    warnings = _warnings(loaded)
    if as_json:
        _echo_json(
            {"valid": True, "path": _text(target), "aliases": list(loaded.models), "warnings": warnings}
        )
        return
    count = len(loaded.models)
    where = str(target) if target is not None else "no config file: built-in defaults"
    typer.echo(f"valid: {count} alias{'' if count == 1 else 'es'} ({where})")
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)


def _warnings(config: MlxdConfig) -> list[str]:
    """One line per alias that is valid but cannot serve as things stand: its repo is not in
    the HF cache yet, or, with ``[distributed]``, its model is an encoder embedding model,
    which no rank can split (its load is refused).

    (A missing local directory is an error of the config itself: nothing will create it.
    Whether a model is an encoder is a fact of its files, which a pull may bring later, so
    it is a warning here and an error at the load, never a reason to reject the config.)
    """
    from mlxd.hub import HubEnv, resolve_cached_model
    from mlxd.hub.capabilities import generates

    cache = HubEnv.from_environ().cache_dir
    lines = []
    for alias, model in config.models.items():
        directory = model.local_path
        if directory is None:
            try:
                directory = resolve_cached_model(model.model, model.revision, alias=alias, cache_dir=cache)
            except HubError as error:
                lines.append(f"models.{alias}.model: {error.message}; run `mlxd models pull {alias}`")
                continue
        if config.distributed is not None and not generates(directory):
            lines.append(
                f"models.{alias}.model: encoder embedding models are not served across several ranks"
                " yet; serve it from a daemon without [distributed]"
            )
    return lines


@app.command()
def show(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the effective config, with secrets masked.

    Values come from the file, then environment overrides.
    """
    from mlxd.config.loader import discover_config_path, environment_layer, load_config, read_config_file
    from mlxd.config.problems import environment_variable

    path = discover_config_path(config)
    loaded = load_config(path)
    file_data = read_config_file(path)[0] if path is not None else {}
    data = _masked(loaded)
    env = {key: environment_variable(key) or "environment" for key in _leaves(environment_layer())}
    if as_json:
        by_label = {_label(key): name for key, name in env.items()}
        _echo_json({"path": _text(path), "config": data, "environment": by_label})
        return
    sources = {key: _source(key, env, file_data) for key in _leaves(data)}
    header = f"# effective config of {path}" if path is not None else "# built-in defaults (no config file)"
    if env:
        header += ", with environment overrides"
    if _on_terminal():
        _print_tables(header, data, sources)
    else:
        typer.echo("\n".join([header, *_as_toml(data, sources)]))


@app.command()
def path(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the config file in use, or where mlxd looks for one.

    A note on stderr says why that file, when ./mlxd.toml shadows the user config.
    """
    from mlxd.config.loader import config_search_paths, discover_config

    found, source = discover_config(config)
    searched = [str(p) for p in config_search_paths()]
    if as_json:
        exists = found is not None and found.is_file()
        _echo_json({"path": _text(found), "exists": exists, "source": source, "searched": searched})
    elif found is not None:
        typer.echo(str(found.absolute()))
        if not found.is_file():
            typer.echo(f"note: {found} does not exist yet; create it with `mlxd config init`", err=True)
        elif source == "working directory":
            typer.echo(
                f"note: ./mlxd.toml in the current directory is used here; elsewhere it is the "
                f"user config, {searched[1]} (`mlxd config init` writes it)",
                err=True,
            )
    else:
        typer.echo("no config file: using built-in defaults")
        typer.echo("looked for: " + ", ".join(searched))
        typer.echo("create one with `mlxd config init`")


@app.command()
def init(
    path: InitPathArgument = None,
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config.

    The default target is the user config file.
    """
    from mlxd.config.paths import user_config_file
    from mlxd.config.template import render_starter

    target = (path or config or user_config_file()).expanduser()
    if target.exists() and not force:
        raise MlxdError(f"{target} already exists", hint="pass --force to overwrite it")
    try:
        _write_private(target, render_starter())
    except OSError as exc:
        raise MlxdError(f"cannot write {target}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {target}")
    typer.echo("edit it, then check it with `mlxd config check`")


@app.command()
def schema(config: ConfigOption = None) -> None:
    """Print the JSON Schema of mlxd.toml, for editors.

    docs/mlxd.schema.json holds a copy.
    """
    from mlxd.config.schema import MlxdConfig

    _echo_json(MlxdConfig.model_json_schema())


def _write_private(target: Path, text: str) -> None:
    """Write atomically (a watching daemon never reads half a file), readable by the owner only."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp creates it with mode 0600
            handle.write(text)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _masked(config: MlxdConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    if config.server.api_key.get_secret_value():
        data["server"]["api_key"] = MASK
    return data


Key = tuple[str, ...]


def _leaves(data: dict[str, Any], prefix: Key = ()) -> list[Key]:
    """Key paths of the values of a dump, descending into tables but not inline tables."""
    keys: list[Key] = []
    for name, value in data.items():
        parts = (*prefix, name)
        keys += _leaves(value, parts) if isinstance(value, dict) and _is_table(parts) else [parts]
    return keys


def _is_table(parts: Key) -> bool:
    """Whether a key path is a table of its own: a section, an alias, or an alias's defaults."""
    if len(parts) == 1:
        return True
    return parts[0] == "models" and (len(parts) == 2 or (len(parts) == 3 and parts[2] == "defaults"))


def _source(key: Key, env: dict[Key, str], file_data: dict[str, Any]) -> str:
    """``env MLXD_…`` when the environment set ``key`` (or a table around it), else file or default."""
    for end in range(len(key), 0, -1):
        if (name := env.get(key[:end])) is not None:
            return f"env {name}"
    return "file" if _at(file_data, key) is not _MISSING else "default"


_MISSING = object()


def _at(data: dict[str, Any], key: Key) -> Any:
    node: Any = data
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _as_toml(data: dict[str, Any], sources: dict[Key, str], prefix: Key = ()) -> list[str]:
    """The dump as TOML lines (None values left out), each value annotated when env set it."""
    from mlxd.config.template import toml_value

    scalars: list[str] = []
    tables: list[tuple[Key, dict[str, Any]]] = []
    for name, value in data.items():
        parts = (*prefix, name)
        if isinstance(value, dict) and _is_table(parts):
            tables.append((parts, value))
        elif value is not None:
            source = sources.get(parts, "")
            note = f"  # {source}" if source.startswith("env ") else ""
            scalars.append(f"{_label(parts[-1:])} = {toml_value(value)}{note}")
    lines = ["", f"[{_label(prefix)}]"] if prefix and (scalars or not tables) else []
    lines += scalars
    for parts, value in tables:
        lines += _as_toml(value, sources, parts)
    return lines


def _print_tables(header: str, data: dict[str, Any], sources: dict[Key, str]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from mlxd.config.template import toml_value

    rows: dict[Key, list[tuple[str, str, str]]] = {}
    for key in _leaves(data):
        value = _at(data, key)
        if value is None:
            continue
        split = max(end for end in range(1, len(key)) if _is_table(key[:end]))
        source = sources.get(key, "default")
        rows.setdefault(key[:split], []).append(
            (_label(key[split:]), toml_value(value), "" if source == "default" else source)
        )
    console = Console(highlight=False)
    console.print(f"[dim]{header}[/]", markup=True)
    for table, entries in rows.items():
        title = Text(f"[{_label(table)}]", style="bold cyan")
        grid = Table(title=title, title_justify="left", show_header=False, box=None)
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_column(style="dim")
        for name, value, source in entries:
            grid.add_row(Text(name), Text(value), Text(source))
        console.print(grid)


def _label(key: Key) -> str:
    from mlxd.config.problems import key_label

    return key_label(key)


def _on_terminal() -> bool:
    import sys

    return sys.stdout.isatty()


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))
