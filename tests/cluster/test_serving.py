"""A 2-rank daemon on the loopback ring against a 1-process daemon: the same tokens.

One ``mlxd serve`` launches two ranks with ``mlx.launch`` (as it would on two Macs) and
serves a llama split tensor-parallel and a ministral3 split as a pipeline; a daemon in
this process serves the same models alone. Greedy requests of every kind (chat,
streaming, ``n``, constrained, concurrent clients) and a seeded sampled one must come
out token for token the same. The tests of this module share the daemons and run in
order: the last one stops the 2-rank daemon and checks every rank is gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.cluster.conftest import Cluster, alive, descendants, distributed_section, start_cluster
from tests.conftest import RunningDaemon, start_daemon, stop_daemon, write_config

pytestmark = [pytest.mark.mlx, pytest.mark.server, pytest.mark.distributed]

PET = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "legs": {"type": "integer", "minimum": 0, "maximum": 8},
    },
    "required": ["name", "legs"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def pipeline_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ministral3: a family mlx-lm can split as a pipeline (llama it cannot)."""
    from mlxd.runtime.demo_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "mini", model_type="ministral3", seed=3)


@pytest.fixture(scope="module")
def encoder_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT: an encoder embedding model (mlx-embeddings'), which no rank can split."""
    from mlxd.runtime.demo_embedders import build_encoder_model

    return build_encoder_model(tmp_path_factory.mktemp("models") / "bert", family="bert")


def aliases(tiny: Path, mini: Path, encoder: Path) -> str:
    return f"""
[runtime]
keep_alive = "forever"
max_batch_size = 8

[defaults]
temperature = 0.0
max_tokens = 24

[models.tiny]
model = "{tiny}"
default = true

[models.mini]
model = "{mini}"
parallel = "pipeline"

[models.llama-pipeline]
model = "{tiny}"
parallel = "pipeline"

[models.bert]
model = "{encoder}"
"""


@pytest.fixture(scope="module")
def one_process(
    tiny_model_dir: Path,
    pipeline_model_dir: Path,
    encoder_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("one-process")
    config = write_config(
        root / "mlxd.toml",
        "[server]\nport = 0\n" + aliases(tiny_model_dir, pipeline_model_dir, encoder_model_dir),
    )
    running, thread = start_daemon(config)
    try:
        yield running
    finally:
        stop_daemon(running, thread)


@pytest.fixture(scope="module")
def cluster(
    tiny_model_dir: Path,
    pipeline_model_dir: Path,
    encoder_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("two-ranks")
    config = aliases(tiny_model_dir, pipeline_model_dir, encoder_model_dir) + distributed_section()
    running = start_cluster(root, config)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


def answers(url: str, alias: str) -> dict[str, Any]:
    """What one daemon answers to a fixed set of requests for ``alias``."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    chat = [{"role": "user", "content": "Tell me about the sea."}]
    out: dict[str, Any] = {}
    reply = client.chat.completions.create(model=alias, messages=chat)  # type: ignore[arg-type]
    out["chat"] = (
        reply.choices[0].message.content,
        reply.choices[0].finish_reason,
        reply.usage.completion_tokens,
    )  # type: ignore[union-attr]
    stream = client.chat.completions.create(model=alias, messages=chat, stream=True, max_tokens=20)  # type: ignore[arg-type]
    out["stream"] = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    choices = client.chat.completions.create(model=alias, messages=chat, n=2, max_tokens=12)  # type: ignore[arg-type]
    out["n=2"] = [choice.message.content for choice in choices.choices]
    pet = client.chat.completions.create(
        model=alias,
        messages=[{"role": "user", "content": "A pet, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "pet", "schema": PET}},  # type: ignore[arg-type]
        max_tokens=64,
    )
    out["constrained"] = pet.choices[0].message.content
    sampled = client.completions.create(
        model=alias, prompt="Once upon", temperature=0.9, seed=11, max_tokens=16
    )
    out["seeded"] = sampled.choices[0].text

    async def eight() -> list[str | None]:
        aclient = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        replies = await asyncio.gather(
            *[
                aclient.chat.completions.create(
                    model=alias,
                    messages=[{"role": "user", "content": f"Client {i} says hi."}],
                    max_tokens=10 + i,
                )
                for i in range(8)
            ]
        )
        await aclient.close()
        return [r.choices[0].message.content for r in replies]

    out["8 clients"] = asyncio.run(eight())
    return out


@pytest.mark.parametrize("alias", ["tiny", "mini"], ids=["tensor", "pipeline"])
def test_two_ranks_answer_token_for_token_like_one_process(
    cluster: Cluster, one_process: RunningDaemon, alias: str
) -> None:
    split = answers(cluster.url, alias)
    whole = answers(one_process.url, alias)
    assert split == whole
    assert split["chat"][2] == 24  # random weights never stop early: the answer is the full length
    assert json.loads(split["constrained"]).keys() == {"name", "legs"}
    assert len(set(split["8 clients"])) > 1  # eight different prompts, not one answer repeated


def test_status_and_metrics_show_the_ranks(cluster: Cluster) -> None:
    status = cluster.status()
    distributed = status["distributed"]
    assert {k: distributed[k] for k in ("backend", "size", "hosts", "ranks_up")} == {
        "backend": "ring",
        "size": 2,
        "hosts": ["127.0.0.1", "127.0.0.1"],
        "ranks_up": 2,
    }
    assert len(distributed["step_seconds"]) == 2
    assert all(seconds > 0 for seconds in distributed["step_seconds"])  # both decoded above
    with cluster.client() as http:
        metrics = http.get("/metrics").text
    assert 'mlxd_rank_step_seconds{rank="0"}' in metrics
    assert 'mlxd_rank_step_seconds{rank="1"}' in metrics

    done = subprocess.run(
        [sys.executable, "-m", "mlxd", "status", "--json", "--config", str(cluster.config)],
        capture_output=True,
        text=True,
        env=cluster.env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    reported = json.loads(done.stdout)["distributed"]
    assert (reported["size"], reported["ranks_up"], reported["backend"]) == (2, 2, "ring")


def test_a_family_without_pipeline_support_is_a_clear_load_error(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(
        openai.UnprocessableEntityError, match="cannot split llama models as a pipeline"
    ) as caught:
        client.completions.create(model="llama-pipeline", prompt="hi", max_tokens=2)
    assert caught.value.code == "model_unsupported"
    # Every rank refused it alike: the ranks are still in step and serving.
    assert client.completions.create(model="tiny", prompt="hi", max_tokens=3).usage.completion_tokens == 3  # type: ignore[union-attr]


def test_embeddings_are_refused_clearly_and_the_ranks_keep_serving(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError, match="not served across several ranks") as caught:
        client.embeddings.create(model="tiny", input="hello")
    assert caught.value.code == "model_unsupported"
    # An encoder embedding model is refused at its load by every rank, before mlx-lm reads it.
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(model="bert", input="hello")
    assert caught.value.code == "model_unsupported"
    assert (
        "bert: bert encoder embedding models are not served across several ranks yet" in caught.value.message
    )
    assert client.completions.create(model="tiny", prompt="hi", max_tokens=3).usage.completion_tokens == 3  # type: ignore[union-attr]


def test_config_edits_reach_every_rank_and_distributed_needs_a_restart(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    text = cluster.config.read_text()
    tiny = text.split("[models.tiny]\nmodel = ", 1)[1].split("\n", 1)[0]
    write_config(
        cluster.config, text + f"\n[models.short]\nmodel = {tiny}\n[models.short.defaults]\nmax_tokens = 5\n"
    )
    deadline = time.monotonic() + 15
    while "short" not in {m.id for m in client.models.list()} and time.monotonic() < deadline:
        time.sleep(0.1)
    reply = client.chat.completions.create(model="short", messages=[{"role": "user", "content": "hi"}])
    assert reply.usage.completion_tokens == 5  # type: ignore[union-attr]

    write_config(
        cluster.config,
        cluster.config.read_text().replace('heartbeat_timeout = "10s"', 'heartbeat_timeout = "20s"'),
    )
    deadline = time.monotonic() + 15
    while not cluster.status()["config"]["restart_required"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.status()["config"]["restart_required"] == ["distributed"]
    assert (
        "distributed changed: restart mlxd to apply"
        in (cluster.config.parent / "home").joinpath(".local", "state", "mlxd", "log", "mlxd.log").read_text()
    )


def test_sigterm_drains_and_ends_every_rank(cluster: Cluster) -> None:
    """Last in the module: it stops the shared 2-rank daemon."""
    _, processes = cluster.rank_pids()
    assert len(processes) >= 3  # mlx.launch and its two ranks
    assert cluster.stop(signal.SIGTERM) == 0
    assert alive(processes) == set()


def test_a_killed_rank_ends_the_daemon_with_an_error_naming_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = f"""
[models.tiny]
model = "{tiny_model_dir}"
[defaults]
temperature = 0.0
{distributed_section()}"""
    cluster = start_cluster(tmp_path, config)
    try:
        rank0, processes = cluster.rank_pids()
        client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Go on."}], stream=True, max_tokens=2000
        )
        chunks = iter(stream)
        next(chunks)  # the stream is under way
        (rank1,) = {
            pid for pid in processes if pid != rank0 and _command(pid)[1:4] == ["-m", "mlxd", "serve"]
        }
        started = time.monotonic()
        os.kill(rank1, signal.SIGKILL)
        # The stream ends with an error event (naming the rank, unless the ranks' own
        # link failed the step first), not a hang.
        with pytest.raises(openai.APIError):
            for _ in chunks:
                pass
        code = cluster.process.wait(10)
        assert time.monotonic() - started < 10
        assert code != 0
        said = cluster.said().strip().splitlines()
        assert said[-1] == "error: rank 1 (127.0.0.1) exited"  # one line, naming the rank and its host
        assert alive(processes | descendants(cluster.process.pid)) == set()
    finally:
        if cluster.process.poll() is None:
            cluster.stop(signal.SIGKILL)


def _command(pid: int) -> list[str]:
    done = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    return done.stdout.split()


#: Loaded by every Python that starts with this folder on its path: on rank 1 alone, mlx-lm
#: does not import (a broken install on one of the Macs).
_BROKEN_ON_RANK_1 = """
import os
import sys


class _Broken:
    def find_spec(self, name, path=None, target=None):
        if name == "mlx_lm" or name.startswith("mlx_lm."):
            raise ImportError("mlx_lm is broken on this machine")
        return None


if os.environ.get("MLX_RANK") == "1":
    sys.meta_path.insert(0, _Broken())
"""


def test_a_rank_whose_mlx_does_not_load_ends_the_daemon_in_one_line(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tests.cli.conftest import isolated_env
    from tests.conftest import free_port

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BROKEN_ON_RANK_1, encoding="utf-8")
    port = free_port()
    config = write_config(
        tmp_path / "mlxd.toml",
        f'[server]\nport = {port}\n[models.tiny]\nmodel = "{tiny_model_dir}"\n{distributed_section()}',
    )
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **isolated_env(tmp_path), "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    env.pop("MLXD_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "mlxd", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode != 0
    last = (done.stdout + done.stderr).strip().splitlines()[-1]
    assert last == (
        "error: rank 1 (127.0.0.1) failed: the MLX runtime failed to load: "
        "ImportError: mlx_lm is broken on this machine"
    )
