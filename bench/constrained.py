"""Per-token cost of constrained decoding: ``python -m bench.constrained``.

Tokens/s of JSON-schema-constrained requests against free ones on the same daemon and
model, at 1 and 16 concurrent clients. Every constrained output is checked to parse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.servers import start_mlxd_with

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 8},
                    "count": {"type": "integer", "minimum": 0, "maximum": 99},
                },
                "required": ["name", "count"],
                "additionalProperties": False,
            },
            "minItems": 6,
            "maxItems": 6,
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}
CONFIG = """\
[server]
port = {port}
[runtime]
max_batch_size = 16
max_queue = 64
keep_alive = "forever"
[models.tiny]
model = "{model}"
default = true
"""


def _body(seed: int, constrained: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "tiny",
        "messages": [{"role": "user", "content": f"Inventory {seed}"}],
        "max_tokens": 400,
        "temperature": 0.8,
        "seed": seed,
    }
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "inv", "schema": SCHEMA}}
    return body


async def _rate(url: str, clients: int, rounds: int, constrained: bool) -> tuple[float, int]:
    """Aggregate generated tokens per second, and how many finished constrained outputs failed
    to parse (a max_tokens cut is reported as finish "length" and is not counted)."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:

        async def one(seed: int) -> tuple[int, bool]:
            reply = (await http.post("/v1/chat/completions", json=_body(seed, constrained))).json()
            text = reply["choices"][0]["message"]["content"]
            valid = True
            if constrained and reply["choices"][0]["finish_reason"] == "stop":
                try:
                    json.loads(text)
                except ValueError:
                    valid = False
            return reply["usage"]["completion_tokens"], valid

        started = time.perf_counter()
        results = await asyncio.gather(*[one(r * clients + c) for r in range(rounds) for c in range(clients)])
        elapsed = time.perf_counter() - started
    return sum(t for t, _ in results) / elapsed, sum(1 for _, ok in results if not ok)


def run(model: Path, workdir: Path, rounds: int) -> list[dict[str, Any]]:
    """Free and constrained tokens/s at 1 and 16 clients, measured back to back."""
    server = start_mlxd_with(CONFIG.format(port="{port}", model=model), workdir)
    rows = []
    try:
        server.wait_healthy()
        asyncio.run(_rate(server.url, 4, 1, True))  # warm-up: load, compile the grammar
        for clients in (1, 16):
            free, _ = asyncio.run(_rate(server.url, clients, rounds, False))
            constrained, invalid = asyncio.run(_rate(server.url, clients, rounds, True))
            rows.append(
                {
                    "clients": clients,
                    "free_tok_s": round(free, 1),
                    "constrained_tok_s": round(constrained, 1),
                    "ratio": round(constrained / free, 3),
                    "invalid_outputs": invalid,
                }
            )
    finally:
        server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.constrained", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from mlxd.runtime.demo_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        rows = run(build_tiny_model(Path(tmp) / "tiny"), Path(tmp) / "work", args.rounds)
    print(json.dumps(rows, indent=2))
    return 0 if all(r["invalid_outputs"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
