"""Scenario 5: multi-turn chat; time to first token per turn as the history grows."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import httpx

from bench import goals
from bench.clients import RequestResult, chat_body, new_client, request
from bench.prompts import Message, request_messages, turn_message
from bench.raw import RawEngine
from bench.results import Headline, ScenarioResult, Table, fmt, fmt_ms, fmt_ratio
from bench.scenarios.base import Context, Scenario
from bench.servers import ServerProcess, start_mlxd
from bench.stats import median, ratio
from bench.targets import MLXD, RAW, SEED

CACHE_OFF = "mlxd, prompt cache off"
RAW_CACHED = "raw engine + prompt cache"
COLUMNS = (MLXD, CACHE_OFF, SEED, RAW, RAW_CACHED)

METHOD = """\
One client holds a {turns}-turn conversation: each user turn adds ~{words} words, each answer is
{tokens} greedy tokens and goes back into the history ("prompt tokens" shows how the prompt
grows). Streaming; TTFT = request sent → first content chunk; median over {conversations}
conversation(s) with different text. Both servers keep a prompt cache at its default
settings; "cached" is the server's own `usage.prompt_tokens_details.cached_tokens` (prompt
tokens it did not have to prefill). "mlxd, prompt cache off" is a second daemon started for
this scenario with `prompt_cache_bytes = 0` and otherwise the same settings: what mlxd pays
without its cache. The raw engine runs `stream_generate` on the whole history ("raw
engine": no cache, the cost of a cold prefill) and with a KV cache kept per conversation,
trimmed to the common prefix of the new prompt ("+ prompt cache": the floor a prompt cache
can reach)."""

Ask = Callable[[list[Message]], Awaitable[RequestResult]]


async def _conversation(ask: Ask, conversation: int, turns: int, words: int) -> list[RequestResult]:
    history: list[Message] = []
    results = []
    for turn in range(1, turns + 1):
        history.append(turn_message(conversation, turn, words))
        result = await ask(history)
        if result.error is not None:
            raise RuntimeError(f"turn {turn} failed: {result.error}")
        results.append(result)
        history.append({"role": "assistant", "content": result.text})
    return results


def _server_ask(client: httpx.AsyncClient, tokens: int) -> Ask:
    async def ask(messages: list[Message]) -> RequestResult:
        return await request(client, chat_body(messages, tokens, stream=True), time.perf_counter())

    return ask


def _raw_ask(raw: RawEngine, tokens: int, session: str | None) -> Ask:
    async def ask(messages: list[Message]) -> RequestResult:
        return raw.single(messages, tokens, session)

    return ask


async def _start_cache_off(ctx: Context) -> ServerProcess:
    """mlxd without a prompt cache, healthy and with its model loaded."""
    server = start_mlxd(ctx.model_dir, ctx.workdir / "mlxd-cache-off", prompt_cache_bytes=0)
    try:
        await asyncio.to_thread(server.wait_healthy)
        async with new_client(server.url, 1) as client:
            warm = await request(client, chat_body(request_messages(0), 2, stream=True), time.perf_counter())
        if warm.error is not None:
            raise RuntimeError(f"mlxd with the prompt cache off failed: {warm.error}")
    except BaseException:
        server.stop()
        raise
    return server


async def run(ctx: Context) -> ScenarioResult:
    """Each conversation on every target in turn."""
    targets, plan = ctx.running(), ctx.plan
    per_turn: dict[str, list[list[RequestResult]]] = defaultdict(list)
    ctx.say(f"multi-turn: starting {CACHE_OFF}")
    cache_off = await _start_cache_off(ctx)
    try:
        for conversation in range(plan.conversations):
            for name, server in ((MLXD, targets.mlxd), (CACHE_OFF, cache_off), (SEED, targets.seed)):
                ctx.say(f"multi-turn conversation {conversation + 1}: {name}")
                async with new_client(server.url, 1) as client:
                    ask = _server_ask(client, plan.turn_tokens)
                    per_turn[name].append(await _conversation(ask, conversation, plan.turns, plan.turn_words))
            for name, session in ((RAW, None), (RAW_CACHED, f"conversation-{conversation}")):
                ctx.say(f"multi-turn conversation {conversation + 1}: {name}")
                ask = _raw_ask(targets.raw, plan.turn_tokens, session)
                per_turn[name].append(await _conversation(ask, conversation, plan.turns, plan.turn_words))
    finally:
        cache_off.stop()
    return _summarize(per_turn, ctx)


def _summarize(per_turn: dict[str, list[list[RequestResult]]], ctx: Context) -> ScenarioResult:
    plan = ctx.plan
    table = Table(
        "TTFT per turn (median)",
        [
            "turn",
            "prompt tokens",
            "cached: mlxd",
            "cached: mlx_lm.server",
            *COLUMNS,
            f"mlxd / {CACHE_OFF}",
            "mlxd / mlx_lm.server",
            "mlxd / raw engine",
        ],
    )
    headlines = []
    notes = []
    for turn in range(plan.turns):

        def at(name: str, field: str, turn: int = turn) -> float:
            return median([float(getattr(conv[turn], field)) for conv in per_turn[name]])

        ttft = {name: at(name, "ttft") for name in COLUMNS}
        vs_off = ratio(ttft[MLXD], ttft[CACHE_OFF])
        vs_seed, vs_raw = ratio(ttft[MLXD], ttft[SEED]), ratio(ttft[MLXD], ttft[RAW])
        table.rows.append(
            [
                str(turn + 1),
                fmt(at(MLXD, "prompt_tokens")),
                fmt(at(MLXD, "cached_tokens")),
                fmt(at(SEED, "cached_tokens")),
                *(fmt_ms(ttft[n]) for n in COLUMNS),
                fmt_ratio(vs_off),
                fmt_ratio(vs_seed),
                fmt_ratio(vs_raw),
            ]
        )
        if at(CACHE_OFF, "cached_tokens") > 0:
            notes.append(f"- {CACHE_OFF} reported cached prompt tokens at turn {turn + 1}.")
        if turn == plan.turns - 1:
            label = f"turn {turn + 1} TTFT"
            headlines += [
                Headline(
                    f"{label}: mlxd / {CACHE_OFF} (lower is better)", vs_off, goals.LAST_TURN_VS_CACHE_OFF
                ),
                Headline(
                    f"{label}: mlxd / raw engine, cold (lower is better)", vs_raw, goals.LAST_TURN_VS_COLD
                ),
                Headline(f"{label}: mlxd / mlx_lm.server (lower is better)", vs_seed),
            ]
    method = METHOD.format(
        turns=plan.turns, words=plan.turn_words, tokens=plan.turn_tokens, conversations=plan.conversations
    )
    return ScenarioResult("multiturn", "5. Multi-turn chat", method, [table], headlines, notes)


SCENARIO = Scenario("multiturn", "TTFT per turn as the history grows", run, per_model=True)
