"""``MlxEngine``'s promises with real mlx-lm: batching, residency on the real worker,
failures, recovery. (Residency's rules alone: ``test_residency.py``, in milliseconds.)"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import httpx
import pytest

from mlxd.errors import ModelLoadError
from tests.conftest import RunningDaemon, serving

pytestmark = [pytest.mark.mlx, pytest.mark.server]


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mlxd.runtime.demo_model import build_tiny_model

    root = tmp_path_factory.mktemp("sched-models")
    second = build_tiny_model(root / "second", seed=5)
    corrupt = root / "corrupt"
    shutil.copytree(tiny_model_dir, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    escaping = root / "escaping"
    shutil.copytree(tiny_model_dir, escaping)
    outside = root / "outside-tokenizer.json"
    (escaping / "tokenizer.json").rename(outside)
    (escaping / "tokenizer.json").symlink_to(outside)
    return {"first": tiny_model_dir, "second": second, "corrupt": corrupt, "escaping": escaping}


@pytest.fixture
def runtime_daemon(models: dict[str, Path], tmp_path: Path) -> Iterator[RunningDaemon]:
    with serving(
        tmp_path,
        f"""
[server]
port = 0
[runtime]
max_loaded_models = 1
max_batch_size = 16
keep_alive = "forever"
[defaults]
temperature = 0.0
max_tokens = 24
[models.first]
model = "{models["first"]}"
default = true
[models.second]
model = "{models["second"]}"
[models.broken]
model = "{models["corrupt"]}"
[models.escaping]
model = "{models["escaping"]}"
[models.brief]
model = "{models["second"]}"
keep_alive = "1s"
""",
    ) as running:
        yield running


async def _post(
    http: httpx.AsyncClient, body: dict[str, object], path: str = "/v1/completions"
) -> httpx.Response:
    return await http.post(path, json=body)


def _gather(daemon: RunningDaemon, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=120) as http:
            return list(await asyncio.gather(*[_post(http, b) for b in bodies]))

    return asyncio.run(run())


def test_mixed_parameters_share_one_batch_and_keep_their_own(runtime_daemon: RunningDaemon) -> None:
    forced = 123
    bodies: list[dict[str, object]] = [
        {
            "model": "first",
            "prompt": f"request {i}",
            "max_tokens": 48,
            "temperature": 0.3 * (i % 4),
            "seed": i,
            "stop": [f"{i}{i}"],
            "logprobs": 0,
        }
        for i in range(8)
    ]
    bodies[3]["logit_bias"] = {str(forced): 100}
    first = _gather(runtime_daemon, bodies)
    assert all(r.status_code == 200 for r in first)
    status = runtime_daemon.status()
    assert status["largest_batch"] >= 8  # type: ignore[operator]
    ids = [r.json()["choices"][0]["logprobs"]["token_ids"] for r in first]
    assert set(ids[3]) == {forced}
    # Its batch-mates are not forced: their outputs are not all that one token.
    assert all(set(tokens) != {forced} for i, tokens in enumerate(ids) if i != 3)
    again = _gather(runtime_daemon, bodies)
    # Each request's seed reproduces its own output, whoever shares the batch.
    assert [r.json()["choices"][0]["text"] for r in again] == [r.json()["choices"][0]["text"] for r in first]


def test_a_burst_reaches_the_worker_together(runtime_daemon: RunningDaemon) -> None:
    """Requests admitted one after another while the rest of their burst is still being
    admitted are handed to the worker together, after the last one (one prefill for all)."""
    import threading

    from mlxd.runtime.mlx.commands import Insert

    engine = runtime_daemon.engine
    _gather(runtime_daemon, [{"prompt": "load the model", "max_tokens": 1}])
    order: list[str] = []
    admission, gate = engine.admission, engine._gate
    admit, submit, hold_s = admission.admit, gate._submit, gate._hold_s

    async def admitted(*args: object) -> object:
        result = await admit(*args)
        order.append("admitted")
        return result

    def submitted(command: object) -> None:
        if isinstance(command, Insert):
            order.append("sent")
        submit(command)

    busy = threading.Event()
    admission._executor.submit(busy.wait, 30)  # tokenization queues up behind this
    admission.admit, gate._submit = admitted, submitted
    # What is asserted is the handing over after the last admission; the hold's deadline
    # (tested in test_burst_gate) must not cut in when the machine stalls a thread.
    gate._hold_s = 60.0
    try:
        bodies = [{"prompt": f"burst {i}", "max_tokens": 6} for i in range(6)]
        sent = threading.Thread(
            target=lambda: order.extend(str(r.status_code) for r in _gather(runtime_daemon, bodies))
        )
        sent.start()
        deadline = time.monotonic() + 30
        while engine.admitting < len(bodies) and time.monotonic() < deadline:
            time.sleep(0.01)
        busy.set()
        sent.join(60)
    finally:
        busy.set()
        del admission.admit  # the class's own again
        gate._submit, gate._hold_s = submit, hold_s
    assert order == ["admitted"] * 6 + ["sent"] * 6 + ["200"] * 6


def test_cold_model_loads_once_for_ten_concurrent_requests(runtime_daemon: RunningDaemon) -> None:
    before = runtime_daemon.status()["loads"]
    responses = _gather(
        runtime_daemon, [{"model": "second", "prompt": f"p{i}", "max_tokens": 4} for i in range(10)]
    )
    assert [r.status_code for r in responses] == [200] * 10
    assert runtime_daemon.status()["loads"] == before + 1  # type: ignore[operator]


def test_one_model_at_a_time_alternating_aliases(runtime_daemon: RunningDaemon) -> None:
    with runtime_daemon.client() as http:
        outputs: dict[str, set[str]] = {"first": set(), "second": set()}
        for alias in ["first", "second", "first", "second"]:
            response = http.post(
                "/v1/completions", json={"model": alias, "prompt": "same prompt", "max_tokens": 8}
            )
            assert response.status_code == 200
            outputs[alias].add(response.json()["choices"][0]["text"])
            loaded = runtime_daemon.status()["models"]
            assert len(loaded) == 1  # type: ignore[arg-type]
            assert loaded[0]["alias"] == alias  # type: ignore[index]
    assert len(outputs["first"]) == len(outputs["second"]) == 1  # deterministic per model
    assert outputs["first"] != outputs["second"]


def test_corrupt_weights_fail_clearly_and_others_keep_serving(runtime_daemon: RunningDaemon) -> None:
    with runtime_daemon.client() as http:
        assert (
            http.post("/v1/completions", json={"model": "first", "prompt": "x", "max_tokens": 2}).status_code
            == 200
        )
        broken = http.post("/v1/completions", json={"model": "broken", "prompt": "x", "max_tokens": 2})
        # Its status (422, not retried) is checked in tests/hub/test_model_errors.py.
        assert broken.status_code >= 400
        error = broken.json()["error"]
        assert error["code"] == "model_corrupt"
        assert "corrupt" in error["message"] or "incomplete" in error["message"]
        assert "/tmp" not in error["message"]
        again = http.post("/v1/completions", json={"model": "first", "prompt": "x", "max_tokens": 2})
        assert again.status_code == 200
        assert http.get("/health").status_code == 200


def test_keep_alive_unloads_an_idle_model(runtime_daemon: RunningDaemon) -> None:
    with runtime_daemon.client() as http:
        assert (
            http.post("/v1/completions", json={"model": "brief", "prompt": "x", "max_tokens": 2}).status_code
            == 200
        )
    assert any(m["alias"] == "brief" for m in runtime_daemon.status()["models"])  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and runtime_daemon.status()["models"]:
        time.sleep(0.1)
    assert runtime_daemon.status()["models"] == []


def test_load_and_unload_on_demand(runtime_daemon: RunningDaemon) -> None:
    with runtime_daemon.client() as http:
        assert http.post("/mlxd/models/second/load").json() == {"alias": "second", "loaded": True}
        assert [m["alias"] for m in runtime_daemon.status()["models"]] == ["second"]  # type: ignore[union-attr]
        assert http.post("/mlxd/models/second/unload").json() == {"alias": "second", "unloaded": True}
        assert runtime_daemon.status()["models"] == []
        assert http.post("/mlxd/models/nope/load").status_code == 404


class _WorkerDeath(BaseException):
    """Escapes every ``except Exception``: what a real bug in the worker loop would look like."""


def test_a_dead_worker_is_reported_and_restarted(runtime_daemon: RunningDaemon) -> None:
    from mlxd.runtime.mlx.commands import Call

    with runtime_daemon.client() as http:
        assert (
            http.post("/v1/completions", json={"model": "first", "prompt": "x", "max_tokens": 2}).status_code
            == 200
        )

        def die(worker: object) -> None:
            raise _WorkerDeath

        engine = runtime_daemon.daemon.engine  # type: ignore[attr-defined]
        dying: Future[None] = Future()
        queued: Future[None] = Future()
        engine.submit(Call(die, dying))
        engine.submit(Call(lambda worker: None, queued))
        # Neither the command that killed the worker nor one queued behind it waits forever.
        with pytest.raises(ModelLoadError):
            dying.result(timeout=10)
        with pytest.raises(ModelLoadError):
            queued.result(timeout=10)
        deadline = time.monotonic() + 10
        healthy = False
        while time.monotonic() < deadline and not healthy:
            response = http.post("/v1/completions", json={"model": "first", "prompt": "x", "max_tokens": 2})
            healthy = response.status_code == 200 and http.get("/health").status_code == 200
            time.sleep(0.05)
        assert healthy
        assert runtime_daemon.status()["worker"] == "running"


def test_a_worker_that_cannot_start_refuses_every_command_and_says_why(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a broken MLX install does to the engine: nothing waits on the worker that never came."""
    import sys

    from mlxd.errors import MlxdError, StartupError, UnavailableError
    from mlxd.runtime.mlx.commands import Call
    from mlxd.runtime.mlx_engine import MlxEngine
    from mlxd.runtime.specs import ModelSpec, RuntimeSettings

    monkeypatch.setitem(sys.modules, "mlxd.runtime.mlx.worker", None)  # its import fails now
    fatal: list[MlxdError] = []
    spec = ModelSpec(str(tiny_model_dir), local_path=tiny_model_dir, label="tiny")

    async def main() -> None:
        engine = MlxEngine(RuntimeSettings(), lambda spec: tiny_model_dir, on_fatal=fatal.append)
        await engine.start()
        queued: Future[None] = Future()
        engine.submit(Call(lambda worker: None, queued))  # before the worker has even failed
        with pytest.raises(UnavailableError, match="the MLX runtime failed to load: ModuleNotFoundError"):
            await asyncio.wait_for(asyncio.wrap_future(queued), 10)
        with pytest.raises(UnavailableError, match="the MLX runtime failed to load"):
            await asyncio.wait_for(engine.load("tiny", spec, 60.0), 10)  # a request's load
        assert not engine.healthy()
        await engine.stop()

    asyncio.run(main())
    (error,) = fatal  # told once, not restarted over and over
    assert isinstance(error, StartupError)
    assert error.hint is not None
    assert "-m pip install -U" in error.hint


def test_a_symlink_out_of_the_model_directory_is_refused(runtime_daemon: RunningDaemon) -> None:
    with runtime_daemon.client() as http:
        refused = http.post("/v1/completions", json={"model": "escaping", "prompt": "x", "max_tokens": 2})
        # Only a person can fix the directory: a status clients do not retry.
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "model_unsupported"
        message = refused.json()["error"]["message"]
        assert "points outside its directory" in message
        assert "outside-tokenizer" not in message  # the target's path is not revealed
        assert (
            http.post("/v1/completions", json={"model": "first", "prompt": "x", "max_tokens": 2}).status_code
            == 200
        )
