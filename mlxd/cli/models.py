"""``mlxd models``: pull, list and remove models in the Hugging Face cache.

Thin commands over ``mlxd.hub``. The config, huggingface_hub and rich are imported inside
the commands so ``mlxd --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlxd.cli.errors import Interrupted, report
from mlxd.cli.options import ConfigOption, JsonOption
from mlxd.errors import HubError, MlxdError, ModelNotFoundError

if TYPE_CHECKING:
    from mlxd.config.models import ModelConfig
    from mlxd.config.schema import MlxdConfig
    from mlxd.hub import CachedRepo, HubEnv

app = typer.Typer(help="Download, list and remove models.", no_args_is_help=True)

RevisionOption = Annotated[
    str | None,
    typer.Option("--revision", "-r", help="Branch, tag or commit (default: the alias's, else main)."),
]


def _config(path: Path | None) -> MlxdConfig:
    from mlxd.config.loader import discover_config_path, load_config

    return load_config(discover_config_path(path))


@dataclass(frozen=True)
class _Target:
    label: str
    repo_id: str
    revision: str | None


def _target(cfg: MlxdConfig, name: str, revision: str | None) -> _Target | str:
    """What NAME means: an alias (its repo at its revision) or a repo id; a string when nothing is to pull."""
    from mlxd.hub import check_repo_id, check_revision

    if revision is not None:
        check_revision(revision)
    # An exact alias first, then anything with a slash is a repo id, then the aliases' other names.
    alias = name if name in cfg.models else None if "/" in name else cfg.find_alias(name)
    if alias is None:
        if "/" not in name:
            raise ModelNotFoundError(f"{name!r} is not a configured alias")
        return _Target(name, check_repo_id(name), revision)
    model = cfg.models[alias]
    if model.is_local:
        return f"alias {alias} uses a local directory ({model.model}): nothing to pull"
    return _Target(alias, model.model, revision or model.revision)


def _pull_one(target: _Target) -> None:
    from mlxd.hub import pull_model, reporter_for

    try:
        result = pull_model(target.repo_id, target.revision, reporter=reporter_for(sys.stdout))
    except KeyboardInterrupt:
        raise Interrupted("finished files are kept; run the same command again to resume") from None
    where = f"{target.repo_id} at {result.revision} (commit {result.commit[:12]})"
    if result.offline:
        typer.echo(f"{where} is already in the cache (offline)")
    else:
        typer.echo(f"pulled {where}: {result.summary()}")


@app.command("pull")
def pull(
    name: Annotated[
        str | None, typer.Argument(help="A configured alias or a repo id such as org/name.")
    ] = None,
    revision: RevisionOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Pull the repo of every configured alias.")] = False,
    config: ConfigOption = None,
) -> None:
    """Download an MLX model from the Hugging Face Hub.

    Files go into the HF cache; an interrupted pull resumes.
    """
    cfg = _config(config)
    if all_ and revision is not None:
        raise HubError("--revision cannot be combined with --all", hint="pin revisions in the config instead")
    if all_ == (name is not None):
        raise HubError(
            "give either a NAME or --all",
            hint="e.g. `mlxd models pull mlx-community/Qwen2.5-0.5B-Instruct-4bit`",
        )
    if name is not None:
        target = _target(cfg, name, revision)
        if isinstance(target, str):
            typer.echo(target)
            return
        _pull_one(target)
        return
    failed = 0
    seen: set[tuple[str, str | None]] = set()
    for alias in cfg.models:
        target = _target(cfg, alias, revision)
        if isinstance(target, str):
            typer.echo(target)
            continue
        if (target.repo_id, target.revision) in seen:
            continue
        seen.add((target.repo_id, target.revision))
        try:
            _pull_one(target)
        except Interrupted:
            raise
        except MlxdError as error:
            failed += 1
            report(error)
    if not seen and failed == 0:
        typer.echo("no configured alias names a Hub repo")
    if failed:
        raise typer.Exit(1)


@dataclass
class _Row:
    alias: str | None
    source: str
    local: bool
    revision: str | None
    adapter: str | None
    downloaded: bool = False
    size_bytes: int | None = None
    loaded: bool = False
    revisions: list[str] = field(default_factory=list)
    problem: str | None = None
    #: ``vision`` / ``embedding`` when the downloaded model's files say so.
    capabilities: list[str] = field(default_factory=list)


def _loaded_aliases(config: Path | None) -> set[str]:
    """Aliases the running daemon has loaded; empty (silently) when it does not answer."""
    from mlxd.cli.target import resolve

    client = resolve(config, strict=False).client(timeout=2.0)
    try:
        return {m.alias for m in client.status().models}
    except MlxdError:
        return set()
    finally:
        client.close()


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _check(path: Path, name: str, *, local: bool = False) -> str | None:
    """What is wrong with a model directory, in one line that starts with ``name``."""
    from mlxd.hub import validate_model_dir

    try:
        validate_model_dir(path, name=name, local=local)
    except HubError as error:
        return error.message
    return None


def _revision_names(repo: CachedRepo) -> list[str]:
    return [name for rev in repo.revisions for name in (rev.refs or (rev.commit[:12],))]


def _alias_row(
    alias: str, model: ModelConfig, repos: dict[str, CachedRepo], loaded: set[str], *, split: bool = False
) -> _Row:
    row = _Row(alias, model.source, model.is_local, model.revision, model.adapter, loaded=alias in loaded)
    if model.is_local:
        path = model.local_path
        if path is not None and path.is_dir():
            row.size_bytes = _dir_size(path)
            row.problem = _check(path, alias, local=True)
            row.downloaded = row.problem is None
            row.capabilities = _capabilities(path, model, split)
        return row
    repo = repos.get(model.model)
    if repo is None:
        return row
    row.revisions = _revision_names(repo)
    rev = repo.find(model.revision)
    if rev is not None:
        row.size_bytes = rev.size_bytes
        row.problem = _check(rev.path, alias)
        row.downloaded = row.problem is None
        row.capabilities = _capabilities(rev.path, model, split)
    return row


def _capabilities(path: Path, model: ModelConfig, split: bool) -> list[str]:
    from mlxd.hub.capabilities import capabilities

    return list(capabilities(path, pooling=model.pooling, split=split))


def _rows(cfg: MlxdConfig, env: HubEnv, config: Path | None) -> list[_Row]:
    from mlxd.hub import cached_repos

    repos = {r.repo_id: r for r in cached_repos(env.cache_dir)}
    loaded = _loaded_aliases(config) if cfg.models else set()
    split = cfg.distributed is not None
    rows = [_alias_row(alias, model, repos, loaded, split=split) for alias, model in cfg.models.items()]
    configured = {m.model for m in cfg.models.values() if not m.is_local}
    for repo in repos.values():
        if repo.repo_id in configured or not repo.looks_mlx:
            continue
        ok = any(_check(r.path, repo.repo_id) is None for r in repo.revisions if r.looks_mlx)
        rows.append(
            _Row(None, repo.repo_id, False, None, None, ok, repo.size_bytes, revisions=_revision_names(repo))
        )
    return rows


@app.command("list")
def list_models(json_output: JsonOption = False, config: ConfigOption = None) -> None:
    """List configured aliases and downloaded MLX models.

    Shows whether each alias is downloaded and loaded, and other MLX models in the HF cache.
    """
    from mlxd.hub import HubEnv

    rows = _rows(_config(config), HubEnv.from_environ(), config)
    if json_output:
        typer.echo(json.dumps([row.__dict__ for row in rows], indent=2))
    else:
        _print_table(rows)


def _print_table(rows: list[_Row]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from mlxd.hub.progress import human_size

    console = Console()
    if not rows:
        console.print("no models configured or cached; pull one with `mlxd models pull org/name`")
        return
    table = Table(box=None, header_style="bold")
    for column in ("ALIAS", "SOURCE", "REVISION", "ADAPTER", "DOWNLOADED", "SIZE", "LOADED", "CAPABILITIES"):
        table.add_column(column, justify="right" if column == "SIZE" else "left")
    for row in rows:
        downloaded = "yes" if row.downloaded else ("incomplete" if row.problem else "no")
        revision = row.revision or (", ".join(row.revisions) if row.alias is None else "main")
        table.add_row(
            row.alias or "-",
            row.source,
            "local" if row.local else revision,
            row.adapter or "-",
            downloaded,
            "-" if row.size_bytes is None else human_size(row.size_bytes),
            "yes" if row.loaded else "-",
            ", ".join(row.capabilities) or "-",
            style=None if row.alias else "dim",
        )
    console.print(table)
    for row in rows:
        if row.problem and row.alias:
            console.print(Text(row.problem, style="yellow"))  # it starts with the alias


@app.command("rm")
def remove(
    name: Annotated[str, typer.Argument(help="A configured alias or a repo id such as org/name.")],
    revision: Annotated[
        str | None, typer.Option("--revision", "-r", help="Remove only this branch, tag or commit.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete a downloaded model from the HF cache.

    Every revision goes unless --revision names one.
    """
    from mlxd.hub import HubEnv, plan_removal
    from mlxd.hub.progress import human_size

    cfg = _config(config)
    target = _target(cfg, name, revision)
    if isinstance(target, str):
        raise HubError(f"{name} uses a local directory; mlxd does not delete it")
    plan = plan_removal(target.repo_id, revision, cache_dir=HubEnv.from_environ().cache_dir)
    what = "every revision" if plan.whole_repo else ", ".join(c[:12] for c in plan.commits)
    question = f"delete {target.repo_id} ({what}, {human_size(plan.freed_bytes)}) from the cache?"
    if not yes:
        if not sys.stdin.isatty():
            raise HubError(f"not deleting {target.repo_id} without confirmation", hint="pass --yes")
        if not typer.confirm(question, default=False):
            typer.echo("nothing deleted")
            raise typer.Exit(1)
    plan.execute()
    typer.echo(f"deleted {target.repo_id} ({what}), freed {human_size(plan.freed_bytes)}")
