"""Ollama's API routes (``/api/*``, and ``/`` which its clients probe)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, head, post
from litestar.response import Stream

from mlxd import __version__
from mlxd.config.schema import MlxdConfig
from mlxd.errors import ContextLengthError, MlxdError, ModelNotFoundError, RequestError
from mlxd.http.body import StrictBody
from mlxd.http.dialects.ollama import translate
from mlxd.http.dialects.ollama.encode import OllamaEncoder, now_iso
from mlxd.http.dialects.ollama.models import ModelFacts, details, digest, model_facts, model_info
from mlxd.http.embeddings import as_floats, resolve_embeddings
from mlxd.http.errors import Refused
from mlxd.http.generation import CLIENT_CLOSED, STREAM_HEADERS, Generation, start, streamed, whole
from mlxd.http.state import DaemonState
from mlxd.http.translate import dialect_names, resolve_alias
from mlxd.protocol.embeddings import OllamaEmbeddingsRequest, OllamaEmbedRequest
from mlxd.protocol.ollama import ChatRequest, GenerateRequest, ShowRequest
from mlxd.runtime.from_config import keep_alive_for, spec_for
from mlxd.runtime.requests import GenerationRequest

_JSON = "application/json"
_NDJSON = "application/x-ndjson"
#: The Ollama API version whose behaviour these routes follow (clients gate features on it).
OLLAMA_VERSION = "0.12.0"
#: What Ollama's ``expires_at`` says for a model kept forever.
_FOREVER = datetime(2318, 1, 1, tzinfo=UTC)


def _json(body: Any) -> Response[bytes]:
    return Response(msgspec.json.encode(body), media_type=_JSON)


async def _lines(generation: Generation, encoder: OllamaEncoder) -> AsyncIterator[bytes]:
    async for _, events in streamed(generation):
        yield encoder.lines(events, generation.usage)


async def _facts(config: MlxdConfig, alias: str) -> ModelFacts:
    return await asyncio.to_thread(model_facts, config, alias)


async def _facts_or_blank(config: MlxdConfig, alias: str) -> ModelFacts:
    """Listings show every alias, downloaded or not (what cannot be read stays blank)."""
    try:
        return await _facts(config, alias)
    except MlxdError:
        return ModelFacts()


def ollama_router(state: DaemonState) -> Router:
    """``/api`` routes bound to the daemon's state."""

    async def run(
        http: Request[Any, Any, Any],
        request: GenerationRequest,
        chat: bool,
        stream: bool,
        num_ctx: int | None,
        started: float,
    ) -> Response[bytes] | Stream:
        if num_ctx is not None:
            # num_ctx narrows the window; the model's own context still bounds it (admission).
            with dialect_names(translate.NAMES):
                prompt = await state.engine.count_tokens(request)
            if prompt >= num_ctx:
                raise ContextLengthError(
                    f"the prompt has {prompt} tokens but num_ctx is {num_ctx}", param="num_ctx"
                )
            request = replace(request, max_tokens=min(request.max_tokens, num_ctx - prompt))
        generation = await start(state, request, translate.NAMES)
        encoder = OllamaEncoder(generation.alias, chat, started)
        encoder.admitted = time.perf_counter()
        if stream:
            return Stream(_lines(generation, encoder), media_type=_NDJSON, headers=STREAM_HEADERS)
        outputs = await whole(http, generation)
        if outputs is None:
            return Response(b"", status_code=CLIENT_CLOSED)
        encoder.first = generation.meter.first if generation.meter is not None else None
        return _json(encoder.whole(outputs[0], generation.usage()))

    async def load_or_unload_model(name: str | None, keep_alive: float | None) -> tuple[str, str]:
        """Load an alias's model, or unload it with ``keep_alive: 0``; its alias and which."""
        config = state.configs.current
        alias = resolve_alias(config, name)
        if keep_alive == 0:
            await state.engine.unload(alias)
            return alias, "unload"
        kept = keep_alive if keep_alive is not None else keep_alive_for(config, alias)
        await state.engine.load(alias, spec_for(config.models[alias]), kept)
        return alias, "load"

    async def load_or_unload(name: str | None, keep_alive: float | None, chat: bool) -> Response[bytes]:
        """An empty prompt loads the model; with ``keep_alive: 0`` it unloads it (Ollama's way)."""
        alias, done = await load_or_unload_model(name, keep_alive)
        body: dict[str, Any] = {"model": alias, "created_at": now_iso()}
        if chat:
            body["message"] = {"role": "assistant", "content": ""}
        else:
            body["response"] = ""
        return _json({**body, "done": True, "done_reason": done})

    @post("/chat", status_code=200, dto=StrictBody[ChatRequest], return_dto=None)
    async def chat(request: Request[Any, Any, Any], data: ChatRequest) -> Response[bytes] | Stream:
        """Ollama chat: NDJSON stream by default, one object with ``"stream": false``."""
        started = time.perf_counter()
        config = state.configs.current
        if not data.messages:
            return await load_or_unload(
                translate.model_name(data.model, config), translate.keep_alive(data.keep_alive), True
            )
        resolved = translate.chat(data, config)
        return await run(request, resolved, True, data.stream, translate.num_ctx(data.options), started)

    @post("/generate", status_code=200, dto=StrictBody[GenerateRequest], return_dto=None)
    async def generate(request: Request[Any, Any, Any], data: GenerateRequest) -> Response[bytes] | Stream:
        """Ollama completion of a prompt: NDJSON stream by default, one object with ``"stream": false``."""
        started = time.perf_counter()
        config = state.configs.current
        if not data.prompt and not data.images:
            return await load_or_unload(
                translate.model_name(data.model, config), translate.keep_alive(data.keep_alive), False
            )
        resolved = translate.generate(data, config)
        return await run(request, resolved, False, data.stream, translate.num_ctx(data.options), started)

    @get("/tags")
    async def tags() -> Response[bytes]:
        """Every alias (and its extra names) as a model."""
        config = state.configs.current
        models = []
        for alias, model in config.models.items():
            facts = await _facts_or_blank(config, alias)
            for name in (alias, *model.aliases):
                models.append(
                    {
                        "name": name,
                        "model": name,
                        "modified_at": now_iso(),
                        "size": facts.size,
                        "digest": digest(config, alias),
                        "details": details(facts),
                    }
                )
        return _json({"models": models})

    @post("/show", status_code=200, dto=StrictBody[ShowRequest], return_dto=None)
    async def show(data: ShowRequest) -> Response[bytes]:
        """An alias's family, size, quantization, context length, template and capabilities."""
        config = state.configs.current
        name = data.model or data.name
        if not name:
            raise RequestError("model is required", param="model")
        alias = config.find_alias(translate.model_name(name, config) or "")
        if alias is None:
            raise ModelNotFoundError(f"model {name!r} not found")
        facts = await _facts(config, alias)
        return _json(
            {
                "modelfile": "",
                "parameters": "",
                "template": facts.template,
                "details": details(facts),
                "model_info": model_info(facts),
                "capabilities": list(facts.capabilities),
                "modified_at": now_iso(),
            }
        )

    @get("/ps")
    async def ps() -> Response[bytes]:
        """The models in memory, with when they unload."""
        config = state.configs.current
        models = []
        now = datetime.now(UTC)
        for loaded in state.engine.status().models:
            if loaded.alias not in config.models:
                continue
            facts = await _facts_or_blank(config, loaded.alias)
            kept = keep_alive_for(config, loaded.alias)
            try:
                expires = now + timedelta(seconds=max(0.0, kept - loaded.idle_s))
            except OverflowError:
                expires = _FOREVER
            models.append(
                {
                    "name": loaded.alias,
                    "model": loaded.alias,
                    "size": loaded.memory_bytes,
                    "digest": digest(config, loaded.alias),
                    "details": details(facts),
                    "expires_at": min(expires, _FOREVER).isoformat().replace("+00:00", "Z"),
                    "size_vram": loaded.memory_bytes,
                    "context_length": facts.context_length,
                }
            )
        return _json({"models": models})

    @get("/version")
    async def version() -> Response[bytes]:
        """The Ollama API version followed (and mlxd's own)."""
        return _json({"version": OLLAMA_VERSION, "mlxd": __version__})

    @post(["/pull", "/push", "/create", "/copy"], status_code=200)
    async def refused(request: Request[Any, Any, Any]) -> None:
        """A request never downloads, creates or copies a model."""
        raise Refused(
            f"{request.scope['path']} is not available: mlxd serves the aliases of its config file; "
            "download a model with `mlxd models pull NAME` and add an alias for it in mlxd.toml"
        )

    @delete("/delete", status_code=200)
    async def delete_model() -> None:
        """A request never deletes a model."""
        raise Refused(
            "/api/delete is not available: remove a downloaded model with `mlxd models rm NAME` "
            "and its alias from mlxd.toml"
        )

    @post("/embed", status_code=200, dto=StrictBody[OllamaEmbedRequest], return_dto=None)
    async def embed(data: OllamaEmbedRequest) -> Response[bytes]:
        """Vectors for a string or strings (``truncate``, on by default, cuts long inputs)."""
        started = time.perf_counter()
        config = state.configs.current
        if not data.input:  # no input: load the model (unload it with keep_alive 0), as Ollama does
            alias, _ = await load_or_unload_model(
                translate.model_name(data.model, config), translate.keep_alive(data.keep_alive)
            )
            return _json({"model": alias, "embeddings": []})
        request = resolve_embeddings(
            config,
            translate.model_name(data.model, config),
            data.input,
            dimensions=data.dimensions,
            keep_alive=translate.keep_alive(data.keep_alive),
            truncate=data.truncate,
        )
        result = await state.engine.embed(request)
        took = int((time.perf_counter() - started) * 1e9)
        return _json(
            {
                "model": request.alias,
                "embeddings": as_floats(result.vectors),
                "total_duration": took,
                "load_duration": 0,
                "prompt_eval_count": result.prompt_tokens,
            }
        )

    @post("/embeddings", status_code=200, dto=StrictBody[OllamaEmbeddingsRequest], return_dto=None)
    async def embeddings(data: OllamaEmbeddingsRequest) -> Response[bytes]:
        """Ollama's older form: one ``prompt``, one ``embedding``."""
        config = state.configs.current
        if not data.prompt:  # as /api/embed: load the model (or unload it)
            await load_or_unload_model(
                translate.model_name(data.model, config), translate.keep_alive(data.keep_alive)
            )
            return _json({"embedding": []})
        request = resolve_embeddings(
            config,
            translate.model_name(data.model, config),
            data.prompt,
            keep_alive=translate.keep_alive(data.keep_alive),
            truncate=True,
        )
        result = await state.engine.embed(request)
        return _json({"embedding": as_floats(result.vectors)[0]})

    return Router(
        path="/api",
        route_handlers=[chat, generate, tags, show, ps, version, refused, delete_model, embed, embeddings],
    )


def root_router() -> Router:
    """``GET /`` and ``HEAD /``: what Ollama's clients and apps probe to find a server."""

    @get("/", media_type="text/plain")
    async def alive() -> str:
        """Ollama's liveness answer."""
        return "Ollama is running"

    @head("/")
    async def alive_head() -> None:
        """The same, headers only."""

    return Router(path="/", route_handlers=[alive, alive_head])
