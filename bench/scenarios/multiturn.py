"""Scenario 5: multi-turn chat; time to first token per turn as the history grows."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import httpx

from bench.clients import RequestResult, chat_body, new_client, request
from bench.prompts import Message, turn_message
from bench.raw import RawEngine
from bench.results import Headline, ScenarioResult, Table, fmt, fmt_ms, fmt_ratio
from bench.scenarios.base import Context, Scenario
from bench.stats import median, ratio
from bench.targets import MLXD, RAW, SEED

RAW_CACHED = "raw engine + prompt cache"
COLUMNS = (MLXD, SEED, RAW, RAW_CACHED)

METHOD = """\
One client holds a {turns}-turn conversation: each user turn adds ~{words} words (~300 tokens),
each answer is {tokens} greedy tokens and goes back into the history, so the last prompt is
close to 2k tokens (the tiny model's context is 2,048). Streaming; TTFT = request sent →
first content chunk; median over {conversations} conversation(s) with different text. Both
servers keep a prompt cache at its default settings; "cached" is the server's own
`usage.prompt_tokens_details.cached_tokens` (prompt tokens it did not have to prefill). The
raw engine runs `stream_generate` on the whole history ("raw engine": no cache, the cost of a
cold prefill) and with a KV cache kept per conversation, trimmed to the common prefix of the
new prompt ("+ prompt cache": the floor a prompt cache can reach)."""

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


async def run(ctx: Context) -> ScenarioResult:
    """Each conversation on every target in turn."""
    targets, plan = ctx.running(), ctx.plan
    per_turn: dict[str, list[list[RequestResult]]] = defaultdict(list)
    for conversation in range(plan.conversations):
        for name, server in ((MLXD, targets.mlxd), (SEED, targets.seed)):
            ctx.say(f"multi-turn conversation {conversation + 1}: {name}")
            async with new_client(server.url, 1) as client:
                ask = _server_ask(client, plan.turn_tokens)
                per_turn[name].append(await _conversation(ask, conversation, plan.turns, plan.turn_words))
        for name, session in ((RAW, None), (RAW_CACHED, f"conversation-{conversation}")):
            ctx.say(f"multi-turn conversation {conversation + 1}: {name}")
            ask = _raw_ask(targets.raw, plan.turn_tokens, session)
            per_turn[name].append(await _conversation(ask, conversation, plan.turns, plan.turn_words))
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
            "mlxd / mlx_lm.server",
            "mlxd / raw engine",
        ],
    )
    headlines = []
    for turn in range(plan.turns):

        def at(name: str, field: str, turn: int = turn) -> float:
            return median([float(getattr(conv[turn], field)) for conv in per_turn[name]])

        ttft = {name: at(name, "ttft") for name in COLUMNS}
        vs_seed, vs_raw = ratio(ttft[MLXD], ttft[SEED]), ratio(ttft[MLXD], ttft[RAW])
        table.rows.append(
            [
                str(turn + 1),
                fmt(at(MLXD, "prompt_tokens")),
                fmt(at(MLXD, "cached_tokens")),
                fmt(at(SEED, "cached_tokens")),
                *(fmt_ms(ttft[n]) for n in COLUMNS),
                fmt_ratio(vs_seed),
                fmt_ratio(vs_raw),
            ]
        )
        if turn == plan.turns - 1:
            headlines.append(
                Headline(f"turn {turn + 1} TTFT: mlxd / mlx_lm.server (lower is better)", vs_seed)
            )
            headlines.append(Headline(f"turn {turn + 1} TTFT: mlxd / raw engine (lower is better)", vs_raw))
    method = METHOD.format(
        turns=plan.turns, words=plan.turn_words, tokens=plan.turn_tokens, conversations=plan.conversations
    )
    return ScenarioResult("multiturn", "5. Multi-turn chat", method, [table], headlines)


SCENARIO = Scenario("multiturn", "TTFT per turn as the history grows", run)
