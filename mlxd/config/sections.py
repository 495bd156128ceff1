"""The ``mlxd.toml`` sections besides the models: ``[server]``, ``[runtime]`` and ``[limits]``.

Part of the schema (``mlxd.config.schema``): every field carries a description, from which
the JSON Schema, ``mlxd config init`` and the README reference are generated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator

from mlxd.config.units import parse_size
from mlxd.config.values import (
    MAX_PATH_LENGTH,
    Duration,
    MemoryBudget,
    Section,
    Size,
    Strings,
    is_loopback,
)


class ServerConfig(Section):
    """``[server]``: where and how the daemon listens."""

    host: str = Field(
        default="127.0.0.1",
        description="Address to bind. Loopback by default; any other host requires api_key.",
    )
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port to listen on.")
    api_key: SecretStr = Field(
        default=SecretStr(""),
        description='When set, required as "Authorization: Bearer <key>" on every route but /health.',
    )
    allowed_hosts: Strings = Field(
        default=(),
        description="Host header values accepted besides localhost, 127.0.0.1 and [::1] (DNS-rebinding guard).",
    )
    cors_allow_origins: Strings = Field(
        default=(), description="Origins allowed to call the API from a browser. No CORS unless listed."
    )
    max_request_bytes: Size = Field(
        default=4 * 2**20,
        gt=0,
        description="Largest request body accepted, in bytes or a size such as '4MiB'.",
    )
    request_timeout: Duration = Field(
        default=30.0,
        gt=0,
        description="Deadline for a client to send a request's headers and body (slowloris guard).",
    )
    drain_timeout: Duration = Field(
        default=30.0,
        ge=0,
        description=(
            "On stop, how long in-flight requests may run; then each ends with an error event"
            " and the daemon exits (mlxd stop, launchd and systemd wait this plus 10s)."
        ),
    )
    max_connections: int = Field(
        default=512,
        ge=1,
        le=65536,
        description=(
            "Open connections served at once; beyond it a new connection gets a quick 503"
            " (the open-file limit is raised to fit)."
        ),
    )
    stream_interval: Duration = Field(
        default=0.02,
        ge=0,
        le=1,
        description=(
            "Shortest time between two chunks of one stream: tokens decoded meanwhile go out"
            " together. The first token and the end are never held back. 0 sends every token"
            " in its own chunk."
        ),
    )
    ollama_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "A second loopback listener for apps hard-wired to Ollama's port (11434): the same"
            " app, routes and guards. Off unless set."
        ),
    )
    responses_store_size: int = Field(
        default=256,
        ge=0,
        le=100_000,
        description=(
            "Responses kept in memory for GET /v1/responses/{id} and previous_response_id"
            " (least recently used first out); 0 keeps none."
        ),
    )
    allow_image_urls: bool = Field(
        default=False,
        description=(
            "Let requests name images by http(s) URL, which the daemon then fetches. Off: images"
            " arrive inline (data: URLs, base64) and a URL is a 400, so no request makes the"
            " daemon reach another host."
        ),
    )
    log_prompts: bool = Field(
        default=False, description="Write prompts and outputs to the log. Off by default."
    )
    log_format: Literal["text", "json"] = Field(default="text", description="Log line format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe level written to the log."
    )

    @model_validator(mode="after")
    def _exposed_needs_key(self) -> ServerConfig:
        if not is_loopback(self.host) and not self.api_key.get_secret_value():
            raise ValueError(
                f"host {self.host!r} is reachable from other machines, so api_key must be set"
                " (in the file or as MLXD_SERVER__API_KEY)"
            )
        return self


class RuntimeConfig(Section):
    """``[runtime]``: how many models stay loaded and how requests are scheduled."""

    max_loaded_models: int = Field(
        default=2,
        ge=1,
        description="Models kept in memory at once; the least recently used idle one is unloaded first.",
    )
    memory_budget: MemoryBudget = Field(
        default="75%",
        description="Memory models may use: a share of physical memory ('75%') or a size ('24GB').",
    )
    keep_alive: Duration = Field(
        default=900.0,
        description="Unload a model idle this long: a duration ('15m'), '0' right away, or 'forever'.",
    )
    max_batch_size: int = Field(default=16, ge=1, le=512, description="Sequences decoded together per model.")
    max_queue: int = Field(
        default=64, ge=0, description="Requests waiting for a batch slot beyond this get 429 queue_full."
    )
    prompt_cache_bytes: Size = Field(
        default=2 * 10**9,
        ge=0,
        description="Memory for reusing the KV cache of shared prompt prefixes; 0 turns it off.",
    )
    prefill_step_size: int = Field(
        default=256,
        ge=16,
        le=8192,
        description="Prompt tokens processed per step; smaller keeps other streams flowing during a long prefill.",
    )
    prompt_cache_dir: str | None = Field(
        default=None,
        max_length=MAX_PATH_LENGTH,
        description="Directory that keeps long prompt prefixes on disk across restarts and model switches"
        " (relative to this file). Unset: the user cache directory; empty: off.",
    )
    prompt_cache_disk_bytes: Size = Field(
        default=4 * 10**9,
        ge=0,
        description="Disk space for prompt prefixes; the least recently used files go first. 0 turns it off.",
    )
    prompt_cache_disk_min_tokens: int = Field(
        default=256,
        ge=16,
        description="Prefixes shorter than this many tokens are not written to disk.",
    )

    _base_dir: Path | None = PrivateAttr(default=None)

    def bind(self, base_dir: Path) -> None:
        """Remember the config file's directory, against which a relative ``prompt_cache_dir``
        resolves (only then: configs that differ by nothing else compare equal)."""
        if self.prompt_cache_dir and not Path(self.prompt_cache_dir).expanduser().is_absolute():
            self._base_dir = base_dir

    def prompt_cache_path(self, default: Path) -> Path | None:
        """The disk prompt-cache directory, absolute (``default`` when unset); ``None`` when off."""
        if self.prompt_cache_disk_bytes <= 0 or self.prompt_cache_dir == "":
            return None
        if self.prompt_cache_dir is None:
            return default
        return ((self._base_dir or Path.cwd()) / Path(self.prompt_cache_dir).expanduser()).resolve()

    def memory_budget_bytes(self, physical: int) -> int:
        """The memory budget in bytes, given the machine's physical memory in bytes."""
        budget = self.memory_budget
        if isinstance(budget, str) and budget.endswith("%"):
            return int(physical * float(budget[:-1]) / 100)
        return parse_size(budget)


class LimitsConfig(Section):
    """``[limits]``: caps on what one request may ask for."""

    max_tokens: int = Field(
        default=32768,
        ge=1,
        description="Ceiling on max_tokens for any alias (aliases may set a lower max_tokens_limit).",
    )
    max_n: int = Field(default=8, ge=1, le=128, description="Largest n (choices per request).")
    max_stop: int = Field(default=16, ge=0, description="Most stop strings per request.")
    max_stop_length: int = Field(default=256, ge=1, description="Longest stop string, in characters.")
    max_logit_bias: int = Field(default=1024, ge=0, description="Most logit_bias entries per request.")
    max_messages: int = Field(default=4096, ge=1, description="Most messages in one chat request.")
    max_images: int = Field(default=8, ge=0, le=256, description="Most images in one request.")
    max_image_bytes: Size = Field(
        default=10 * 2**20, gt=0, description="Largest image accepted, as encoded bytes (e.g. '10MiB')."
    )
    max_image_pixels: int = Field(
        default=25_000_000,
        ge=1,
        description="Most pixels (width x height) of one image, read from its header before it is decoded.",
    )
    max_embedding_inputs: int = Field(
        default=2048, ge=1, le=100_000, description="Most inputs in one embeddings request."
    )
