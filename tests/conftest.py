"""Fixtures shared by the whole suite: tiny models, and real daemons on 127.0.0.1 serving
real MLX (``daemon``) or the fake engine (``fake_daemon``, for what HTTP alone decides)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user cache directory (where daemons keep prompt prefixes on disk) of this test
    session alone, never the machine's own."""
    path = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(path))
        yield path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama with random weights, a real BPE tokenizer and a ChatML template."""
    from mlxd.runtime.demo_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def plain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model without a chat template (role_mapping formats its prompts)."""
    from mlxd.runtime.demo_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "plain", chat_template=False)


@pytest.fixture(scope="session")
def draft_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller random model with the tiny model's tokenizer (one layer, other weights): a
    draft for speculative decoding."""
    from mlxd.runtime.demo_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "draft", num_layers=1, seed=7)


@pytest.fixture(scope="session")
def kv_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with 64-wide attention heads, so its KV cache can be quantized
    (MLX quantizes groups of 32, 64 or 128 values; the tiny model's heads are 16 wide)."""
    from mlxd.runtime.demo_model import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("models") / "kv", hidden_size=128, num_heads=2, num_kv_heads=1
    )


@pytest.fixture(scope="session")
def thinking_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a reasoning model: <think> tags and a template that opens the block."""
    from mlxd.runtime.demo_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "thinker", thinking=True)


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for the tiny model that visibly changes its logits."""
    from mlxd.runtime.demo_model import build_lora_adapter

    return build_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "tiny-lora")


#: One TLS context for every test client: httpx builds a new one for each client otherwise
#: (~20 ms, reading the CA bundle), and the tests only speak plain HTTP on loopback.
LOOPBACK_TLS = ssl.create_default_context()


@dataclass
class RunningDaemon:
    """A daemon serving on a thread: its URL, config file and the object itself."""

    url: str
    config_path: Path
    daemon: object

    @property
    def engine(self) -> Any:
        """The engine the daemon serves (``MlxEngine``, or a ``FakeEngine``)."""
        return self.daemon.engine  # type: ignore[attr-defined]

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, verify=LOOPBACK_TLS, **kwargs)  # type: ignore[arg-type]

    def status(self) -> dict[str, object]:
        with self.client() as http:
            return http.get("/mlxd/status").json()  # type: ignore[no-any-return]


def start_daemon(
    config_path: Path, overrides: dict[str, object] | None = None, engine: object | None = None
) -> tuple[RunningDaemon, threading.Thread]:
    """Start the real daemon (config store, uvicorn) on a thread, port from the file, with the
    MLX engine ``mlxd serve`` runs or the ``engine`` given (a fake one)."""
    from mlxd.config.store import ConfigStore
    from mlxd.daemon import Daemon, mlx_engine

    store = ConfigStore(config_path, overrides)
    daemon = Daemon(store, engine if engine is not None else mlx_engine(store))  # type: ignore[arg-type]
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        async def main() -> None:
            started = asyncio.Event()
            task = asyncio.create_task(daemon.serve(started, signals=False))
            waiter = asyncio.create_task(started.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="test-daemon", daemon=True)
    thread.start()
    assert ready.wait(60), "the daemon did not start"
    if failure:
        raise failure[0]
    url = f"http://127.0.0.1:{daemon.bound_port}"
    return RunningDaemon(url, config_path, daemon), thread


def stop_daemon(running: RunningDaemon, thread: threading.Thread) -> None:
    """Drain and stop a daemon started by ``start_daemon``."""
    running.daemon.request_stop()  # type: ignore[attr-defined]
    thread.join(60)
    assert not thread.is_alive(), "the daemon did not stop"


@contextlib.contextmanager
def serving(root: Path, config: str, engine: object | None = None) -> Iterator[RunningDaemon]:
    """A daemon for ``config`` (written to ``root/mlxd.toml``) while the block runs, on real
    MLX or on ``engine``."""
    running, thread = start_daemon(write_config(root / "mlxd.toml", config), engine=engine)
    try:
        yield running
    finally:
        stop_daemon(running, thread)


def write_config(path: Path, text: str) -> Path:
    """Write a config file the way editors do: to a temp file, then rename over."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def aliases_config(tiny: object, adapter: object, plain: object, extra: str = "") -> str:
    """The config of ``daemon`` and ``fake_daemon``: the same aliases over real model
    directories or over names the fake engine makes up."""
    return f"""
[server]
port = 0

[runtime]
max_batch_size = 8
max_queue = 16
keep_alive = "forever"

[defaults]
temperature = 0.0
max_tokens = 32

[models.tiny]
model = "{tiny}"
default = true
aliases = ["gpt-4o-mini"]
max_tokens_limit = 64

[models.tiny-lora]
model = "{tiny}"
adapter = "{adapter}"

[models.plain]
model = "{plain}"
context_length = 128
{extra}"""


@pytest.fixture(scope="module")
def daemon(
    tiny_model_dir: Path,
    plain_model_dir: Path,
    tiny_adapter_dir: Path,
    thinking_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningDaemon]:
    """A real daemon serving the tiny model under several aliases (module-scoped)."""
    thinkers = f"""
[models.thinker]
model = "{thinking_model_dir}"

[models.thinker-fast]
model = "{thinking_model_dir}"
chat_template_kwargs = {{ enable_thinking = false }}
"""
    config = aliases_config(tiny_model_dir, tiny_adapter_dir, plain_model_dir, thinkers)
    with serving(tmp_path_factory.mktemp("daemon"), config) as running:
        yield running


def fake_engine(config_text: str, root: Path, **kwargs: Any) -> Any:
    """A ``FakeEngine`` with the ``[runtime]`` settings of ``config_text``."""
    from mlxd.config import load_config
    from mlxd.runtime.from_config import runtime_settings
    from tests.fakes import FakeEngine

    path = write_config(root / "engine.toml", config_text)
    return FakeEngine(runtime_settings(load_config(path)), **kwargs)


@pytest.fixture(scope="module")
def fake_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A real daemon (config, guards, HTTP, residency, admission) on the fake engine: the
    aliases of ``daemon``, a token every millisecond, a 32k context, no MLX (module-scoped)."""
    root = tmp_path_factory.mktemp("fake-daemon")
    (root / "adapters" / "tiny-lora").mkdir(parents=True)
    config = aliases_config("org/tiny", "adapters/tiny-lora", "org/plain")
    engine = fake_engine(config, root, token_delay=0.001, context_length=32768)
    with serving(root, config, engine) as running:
        yield running


class LogRecords(logging.Handler):
    """Every record of the ``mlxd`` loggers while a test runs (the daemon's threads included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[LogRecords]:
    """The ``mlxd`` log records written during the test (INFO and above)."""
    handler = LogRecords()
    logger = logging.getLogger("mlxd")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def eventually(check: Callable[[], bool], seconds: float = 3.0) -> bool:
    """Poll ``check`` until it holds (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False
