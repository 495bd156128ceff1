"""The reliability record: bad inputs and faults against a real daemon, counted.
``python -m bench.reliability``.

Four runs, each against its own ``mlxd serve`` on the tiny model:

- **bad inputs**: every bad request of the test suite (the parametrized cases of
  ``tests/http/test_bad_input.py`` and ``tests/http/test_strict_input.py``, read from the
  tests themselves, so a new case lands here too) plus the load run's own bad bodies,
  then a good request: counted by status class, 5xx and broken connections;
- **load and faults**: ``bench.loadtest`` (streams, abandoned streams, abandoned requests,
  bad requests, a queue that overflows);
- **disconnect storm**: clients that hang up mid-stream and mid-request, then the 5xx
  that ``/metrics`` counted and the sequences left;
- **stop under load**: SIGTERM with streams and requests in flight, then how each ended
  (error event and ``[DONE]``, 503, or cut), how long the exit took, tracebacks logged;
- **connection flood**: more connections than ``max_connections``, then how each was
  answered and whether ``/health`` still answers.

It prints a table of the counts (and JSON with ``--json``); exit 1 when any run saw a
5xx, a cut stream, a broken connection or a daemon that stopped answering.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import loadtest
from bench.servers import ServerProcess, start_mlxd_with

CONFIG = """\
[server]
port = {{port}}
drain_timeout = "{drain}"
max_connections = {connections}
[runtime]
max_batch_size = 8
max_queue = 256
keep_alive = "forever"
[defaults]
temperature = 0.7
[models.tiny]
model = "{model}"
default = true
[models.plain]
model = "{model}"
context_length = 128
"""

GOOD = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
CHAT, TEXT = "/v1/chat/completions", "/v1/completions"


@dataclass(frozen=True)
class Bad:
    """One bad request: where it goes, its body (JSON or raw bytes) and extra headers."""

    source: str
    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def parametrized(test: Callable[..., Any]) -> Iterator[dict[str, Any]]:
    """The cases of a test's ``parametrize`` marks, one dict of argument values per case."""
    axes = []
    for mark in getattr(test, "pytestmark", []):
        if mark.name == "parametrize":
            names = mark.args[0]
            names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
            axes.append([dict(zip(names, _values(v, len(names)), strict=True)) for v in mark.args[1]])
    for combination in itertools.product(*axes):
        yield {k: v for case in combination for k, v in case.items()}


def _values(value: Any, arity: int) -> tuple[Any, ...]:
    """A case's argument values (a ``pytest.param`` carries them in ``values``)."""
    if type(value).__name__ == "ParameterSet":
        return tuple(value.values)
    return (value,) if arity == 1 else tuple(value)


def suite_bad_inputs() -> list[Bad]:
    """Every bad request the test suite sends, read from its parametrized tests."""
    from tests.http import test_bad_input as bad
    from tests.http import test_strict_input as strict

    cases: list[Bad] = []

    def add(test: Callable[..., Any], make: Callable[[dict[str, Any]], Bad | list[Bad]]) -> None:
        for case in parametrized(test):
            made = make(case)
            cases.extend(made if isinstance(made, list) else [made])

    name = "test_bad_input"
    add(bad.test_malformed_bodies, lambda c: Bad(name, CHAT, c["raw"]))
    add(bad.test_wrong_types, lambda c: Bad(name, CHAT, {**GOOD, c["field"]: c["value"]}))
    add(bad.test_out_of_range, lambda c: Bad(name, CHAT, {**GOOD, c["field"]: c["value"]}))
    add(
        bad.test_unsupported_fields_are_named_never_ignored,
        lambda c: Bad(name, CHAT, {**GOOD, c["field"]: c["value"]}),
    )
    add(bad.test_empty_or_unservable_prompts, lambda c: Bad(name, c["path"], c["body"]))
    add(
        bad.test_unknown_and_path_like_models_are_404, lambda c: Bad(name, CHAT, {**GOOD, "model": c["name"]})
    )
    add(bad.test_path_like_adapters_are_400, lambda c: Bad(name, CHAT, {**GOOD, "adapters": c["adapter"]}))
    add(bad.test_bad_host_header, lambda c: Bad(name, CHAT, GOOD, {"host": c["host"]}))
    add(
        bad.test_what_the_real_model_cannot_serve_is_refused,
        lambda c: Bad(name, c["path"], {k: v for k, v in {**GOOD, **c["fields"]}.items() if v is not None}),
    )
    name = "test_strict_input"
    prompt = {"model": "tiny", "prompt": "hi", "max_tokens": 2}
    add(
        strict.test_strings_are_never_taken_for_numbers_or_booleans,
        lambda c: Bad(name, c["path"], {**(GOOD if c["path"] == CHAT else prompt), c["field"]: c["value"]}),
    )
    add(strict.test_broken_bodies_say_what_is_wrong, lambda c: Bad(name, c["path"], c["raw"]))
    add(
        strict.test_nesting_deeper_than_64_is_a_400,
        lambda c: Bad(
            name, CHAT, ('{"model": "tiny", "tools": ' + "[" * c["depth"] + "]" * c["depth"] + "}").encode()
        ),
    )
    name = "guards"
    cases += [
        Bad(name, CHAT, b"{}", {"content-type": "text/plain"}),
        Bad(name, CHAT, b'{"messages": "' + b"x" * (5 * 2**20) + b'"}'),
        Bad(name, CHAT, GOOD, {"origin": "http://evil.example"}),
        Bad(name, "/v1/nothing", GOOD),
    ]
    cases += [Bad("loadtest", CHAT, body) for body in loadtest.BAD_BODIES]
    return cases


def _send(http: httpx.Client, bad: Bad) -> int:
    headers = dict(bad.headers)
    if isinstance(bad.body, bytes):
        headers.setdefault("content-type", "application/json")
        return http.post(bad.path, content=bad.body, headers=headers).status_code
    return http.post(bad.path, json=bad.body, headers=headers).status_code


def run_bad_inputs(server: ServerProcess) -> dict[str, Any]:
    """Send every bad input once, then a good request; count what came back."""
    cases = suite_bad_inputs()
    statuses: Counter[str] = Counter()
    broken = 0
    accepted = []
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for bad in cases:
            try:
                status = _send(http, bad)
            except httpx.TransportError:
                broken += 1
                continue
            statuses[f"{status // 100}xx"] += 1
            if status < 400:
                accepted.append(f"{bad.source}: {bad.path} {str(bad.body)[:60]}")
        good = http.post(CHAT, json=GOOD).status_code
        health = http.get("/health").status_code
    return {
        "inputs": len(cases),
        "by_source": dict(Counter(bad.source for bad in cases)),
        "by_status": dict(sorted(statuses.items())),
        "5xx": statuses.get("5xx", 0),
        "broken_connections": broken,
        "accepted": accepted,
        "good_request_after": good,
        "health_after": health,
    }


def _statuses(server: ServerProcess) -> Counter[str]:
    """Requests to the API (``/v1/...``) by status, as ``/metrics`` counted them so far."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    counts: Counter[str] = Counter()
    for labels, value in re.findall(r"mlxd_requests_total\{([^}]*)\} ([\d.e+]+)", text):
        if 'route="/v1/' in labels:
            counts[re.findall(r'status="(\d+)"', labels)[0]] += int(float(value))
    return counts


def _logs(server: ServerProcess) -> str:
    """What the daemon wrote: its own log file, then its console."""
    own = server.log_path.parent / "state" / "mlxd" / "log" / "mlxd.log"
    return "".join(p.read_text(errors="replace") for p in (own, server.log_path) if p.is_file())


def _active(server: ServerProcess) -> int:
    return int(httpx.get(server.url + "/mlxd/status", timeout=10).json()["active_sequences"])


async def _storm(url: str, clients: int) -> Counter[str]:
    """Clients that leave: half mid-stream after the first event, half mid-request 50 ms
    after sending it (each on its own connection, so every request reaches the daemon)."""
    outcomes: Counter[str] = Counter()
    body = {**GOOD, "max_tokens": 400}

    async def one(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            try:
                if i % 2:
                    async with http.stream("POST", CHAT, json={**body, "stream": True}) as response:
                        if response.status_code != 200:
                            outcomes[f"refused {response.status_code}"] += 1
                            return
                        async for line in response.aiter_lines():
                            if line:
                                break
                    outcomes["left mid-stream"] += 1
                else:
                    leave = httpx.Timeout(60, read=0.05)
                    response = await http.post(TEXT, json={"prompt": "hi", "max_tokens": 400}, timeout=leave)
                    outcomes[f"answered {response.status_code} before leaving"] += 1
            except httpx.ReadTimeout:
                outcomes["left mid-request"] += 1
            except httpx.TransportError:
                outcomes["broken"] += 1

    await asyncio.gather(*[one(i) for i in range(clients)])
    return outcomes


def run_disconnect_storm(server: ServerProcess, clients: int) -> dict[str, Any]:
    """Many clients hang up at once; the daemon must count 499s, not 500s, and free every slot."""
    before = _statuses(server)
    outcomes = asyncio.run(_storm(server.url, clients))
    deadline = time.monotonic() + 10
    while _active(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    counted = _statuses(server) - before
    return {
        "clients": clients,
        "outcomes": dict(outcomes),
        "counted": dict(sorted(counted.items())),
        "5xx_in_metrics": sum(n for status, n in counted.items() if status.startswith("5")),
        "sequences_left": _active(server),
        "health_after": httpx.get(server.url + "/health", timeout=10).status_code,
    }


async def _in_flight(url: str, streams: int, requests: int, started: asyncio.Event) -> Counter[str]:
    """Long streams and requests, reading until the daemon ends them; how each ended."""
    outcomes: Counter[str] = Counter()
    begun = 0

    def one_started() -> None:
        nonlocal begun
        begun += 1
        if begun == streams + requests:
            started.set()

    # Greedy: the tiny model never picks its end-of-turn token then, so nothing ends early.
    long = {"max_tokens": 30000, "temperature": 0.0}

    async def stream(http: httpx.AsyncClient) -> None:
        lines: list[str] = []
        try:
            async with http.stream("POST", CHAT, json={**GOOD, **long, "stream": True}) as response:
                async for line in response.aiter_lines():
                    if line:
                        if not lines:
                            one_started()
                        lines.append(line)
        except httpx.TransportError:
            outcomes["stream cut"] += 1
            return
        ended = lines[-2:] if len(lines) >= 2 else lines
        if ended and ended[-1] == "data: [DONE]" and '"unavailable"' in ended[0]:
            outcomes["stream ended with error event + [DONE]"] += 1
        elif ended and ended[-1] == "data: [DONE]":
            outcomes["stream finished"] += 1
        else:
            outcomes["stream cut"] += 1

    async def request(http: httpx.AsyncClient) -> None:
        one_started()
        try:
            response = await http.post(TEXT, json={"prompt": "hi", **long})
        except httpx.TransportError:
            outcomes["request cut"] += 1
            return
        outcomes[
            f"request {response.status_code} {response.json().get('error', {}).get('code', '')}".strip()
        ] += 1

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await asyncio.gather(
            *[stream(http) for _ in range(streams)], *[request(http) for _ in range(requests)]
        )
    return outcomes


def run_stop_under_load(server: ServerProcess, drain_s: float, streams: int, requests: int) -> dict[str, Any]:
    """SIGTERM with long streams and requests in flight: each must end properly, and soon."""

    async def scenario() -> tuple[Counter[str], float, int]:
        started = asyncio.Event()
        clients = asyncio.ensure_future(_in_flight(server.url, streams, requests, started))
        await asyncio.wait_for(started.wait(), 120)
        await asyncio.sleep(0.5)
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.process.wait, 120)
        took = time.monotonic() - began
        return await clients, took, code

    outcomes, took, code = asyncio.run(scenario())
    log = _logs(server)
    cut = sum(n for k, n in outcomes.items() if "cut" in k)
    return {
        "streams": streams,
        "requests": requests,
        "drain_timeout_s": drain_s,
        "outcomes": dict(outcomes),
        "cut": cut,
        # 503 unavailable is the answer a request in flight gets when the daemon stops.
        "5xx_unexpected": sum(
            n for k, n in outcomes.items() if k.startswith("request 5") and k != "request 503 unavailable"
        ),
        "exit_code": code,
        "exit_s": round(took, 2),
        "tracebacks_logged": log.count("Traceback"),
    }


def run_connection_flood(server: ServerProcess, cap: int, connections: int) -> dict[str, Any]:
    """Open many more connections than ``max_connections``, each asking ``/health``."""
    host, port = server.url.removeprefix("http://").split(":")
    log_before = len(_logs(server).splitlines())
    socks, statuses = [], Counter[str]()
    try:
        for _ in range(connections):
            try:
                socks.append(socket.create_connection((host, int(port)), timeout=10))
            except OSError:
                statuses["connect failed"] += 1
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for sock in socks:
            try:
                head = sock.recv(65536).split(b"\r\n", 1)[0]
                statuses[head.split(b" ")[1].decode() if head else "closed"] += 1
            except OSError:
                statuses["broken"] += 1
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.5)
    health = httpx.get(server.url + "/health", timeout=10).status_code
    lines = _logs(server).splitlines()[log_before:]
    return {
        "max_connections": cap,
        "connections": connections,
        "answers": dict(sorted(statuses.items())),
        # 503 is the answer beyond the cap.
        "5xx_unexpected": sum(n for k, n in statuses.items() if k.startswith("5") and k != "503"),
        "health_after": health,
        "log_lines": len(lines),
        "refusal_log_lines": sum("refusing connections" in line for line in lines),
    }


def run(model: Path, workdir: Path, *, clients: int, seconds: float | None) -> dict[str, Any]:
    """Every run, on fresh daemons (``seconds=None`` leaves the load run out); the figures
    and the verdict. ``model`` needs a context long enough for streams that outlast a drain."""

    def start(name: str, drain: str = "30s", connections: int = 512) -> ServerProcess:
        config = CONFIG.format(model=model, drain=drain, connections=connections)
        server = start_mlxd_with(config, workdir / name)
        server.wait_healthy()
        return server

    figures: dict[str, Any] = {}
    server = start("inputs")
    try:
        figures["bad_inputs"] = run_bad_inputs(server)
        figures["disconnect_storm"] = run_disconnect_storm(server, clients)
    finally:
        server.stop()
    if seconds is not None:
        # A small prompt cache: RSS then levels off once it is full, so growth means a leak.
        figures["load"] = loadtest.run(model, clients, seconds, workdir / "load", cache="16MB")
    server = start("faults", drain="1s", connections=32)
    try:
        figures["connection_flood"] = run_connection_flood(server, 32, 20 * 32)
        figures["stop_under_load"] = run_stop_under_load(server, 1.0, streams=8, requests=4)
    finally:
        server.stop()
    figures["ok"] = verdict(figures)
    return figures


def verdict(figures: dict[str, Any]) -> bool:
    """No 5xx, nothing cut or broken, every daemon still answering."""
    bad, storm, stop, flood = (
        figures[k] for k in ("bad_inputs", "disconnect_storm", "stop_under_load", "connection_flood")
    )
    return (
        bad["5xx"] == 0
        and bad["broken_connections"] == 0
        and not bad["accepted"]
        and bad["good_request_after"] == 200
        and storm["5xx_in_metrics"] == 0
        and storm["sequences_left"] == 0
        and figures.get("load", {"ok": True})["ok"]
        and stop["cut"] == 0
        and stop["5xx_unexpected"] == 0
        and stop["exit_code"] == 0
        and stop["tracebacks_logged"] == 0
        and set(flood["answers"]) <= {"200", "503"}
        and flood["health_after"] == 200
    )


def table(figures: dict[str, Any]) -> str:
    """The counts as a Markdown table."""
    bad, storm, stop, flood = (
        figures[k] for k in ("bad_inputs", "disconnect_storm", "stop_under_load", "connection_flood")
    )
    load = figures.get("load")
    rows = [
        (
            "bad inputs",
            f"{bad['inputs']} ({', '.join(f'{k}: {v}' for k, v in bad['by_source'].items())})",
            f"{bad['by_status']}",
            bad["5xx"],
            f"broken connections {bad['broken_connections']}, accepted {len(bad['accepted'])}",
        ),
        (
            "disconnect storm",
            f"{storm['clients']} clients",
            f"{storm['outcomes']}",
            storm["5xx_in_metrics"],
            f"counted by /metrics {storm['counted']}, sequences left {storm['sequences_left']}",
        ),
        (
            "SIGTERM under load",
            f"{stop['streams']} streams + {stop['requests']} requests, drain {stop['drain_timeout_s']} s",
            f"{stop['outcomes']}",
            stop["5xx_unexpected"],
            f"cut {stop['cut']}, exit {stop['exit_code']} in {stop['exit_s']} s, tracebacks {stop['tracebacks_logged']}",
        ),
        (
            "connection flood",
            f"{flood['connections']} connections, max_connections {flood['max_connections']}",
            f"{flood['answers']}",
            flood["5xx_unexpected"],
            f"/health after {flood['health_after']}; log: {flood['log_lines']} lines, "
            f"{flood['refusal_log_lines']} about the refusals",
        ),
    ]
    if load is not None:
        load_5xx = sum(n for status, n in load["by_status"].items() if status.startswith("5"))
        rows.insert(
            1,
            (
                "load and faults",
                f"{load['requests']} requests, {load['clients']} clients, {load['seconds']} s",
                f"{load['by_status']}",
                load_5xx,
                f"transport errors {load['transport_errors']}, hung {load['hung']}, incomplete {load['incomplete']}",
            ),
        )
    lines = ["| run | inputs | answers | 5xx (unexpected) | cut, broken, left |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="clients of the load run and the storm")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the load run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    from mlxd.runtime.demo_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny", max_position_embeddings=32768)
        figures = run(model, Path(tmp) / "work", clients=args.clients, seconds=args.seconds)
    print(table(figures))
    return loadtest.report(figures, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
