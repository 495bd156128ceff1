"""The ``mlxd.toml`` schema: one frozen pydantic-settings model and its sections.

Every field carries a description: the JSON Schema, ``mlxd config init`` and the README
reference are generated from them. Unknown keys are errors, so typos never pass, and
values are strict: ``max_queue = 1.0``, ``preload = 1`` or ``log_prompts = "off"`` are
errors, not guesses (sizes and durations still take their string spellings, and lists
arrive from TOML as arrays of strings).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlxd.config.distributed import DistributedConfig, Parallel

# Re-exported: the request defaults are part of the schema's public surface.
from mlxd.config.generation import BUILTIN_DEFAULTS as BUILTIN_DEFAULTS
from mlxd.config.generation import GenerationDefaults as GenerationDefaults
from mlxd.config.sources import FileSettingsSource, TypedEnvSource
from mlxd.config.units import parse_size
from mlxd.config.values import Duration, MemoryBudget, Section, Size, Strings, is_loopback

#: A Hugging Face repo id, matched in full: ``org/name`` with the Hub's allowed characters.
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")
#: A revision: a branch or tag of safe characters, or a commit hash.
REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}")
#: Alias names are what requests put in ``model``: no slashes-with-dots tricks, no spaces.
ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
#: ``chat_template_kwargs`` keys a config may pass to a chat template.
CHAT_TEMPLATE_KWARGS = frozenset({"enable_thinking", "reasoning_effort", "add_generation_prompt"})
#: How a ``model`` value says it is a local directory rather than a repo id.
LOCAL_PREFIXES = ("/", "./", "../", "~")
#: Longest ``model`` / ``adapter`` value accepted; anything longer is a mistake.
MAX_PATH_LENGTH = 4096


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long, a NUL byte: not a directory we can use
        return False


_Section = Section


class ServerConfig(_Section):
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


class RuntimeConfig(_Section):
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


class LimitsConfig(_Section):
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


#: Tokens a draft model proposes per step unless the alias or the request says otherwise
#: (mlx_lm.server's default).
DEFAULT_NUM_DRAFT_TOKENS = 3
#: Most tokens a draft may propose per step.
MAX_NUM_DRAFT_TOKENS = 32


class ModelConfig(_Section):
    """``[models.<alias>]``: one name requests can use, backed by a model and maybe an adapter."""

    model: str = Field(description="Hugging Face repo id, or a local directory (relative to this file).")
    revision: str | None = Field(default=None, description="Branch, tag or commit to pin a repo to.")
    adapter: str | None = Field(
        default=None,
        description="LoRA adapter directory (relative to this file); "
        "shares the base weights with other aliases of the same model.",
    )
    default: bool = Field(default=False, description="Serve this alias when a request names no model.")
    preload: bool = Field(default=False, description="Load at daemon start instead of on first request.")
    keep_alive: Duration | None = Field(
        default=None, description="Per-alias override of [runtime] keep_alive."
    )
    aliases: Strings = Field(default=(), description="More names for this alias (e.g. 'gpt-4o-mini').")
    max_tokens_limit: int | None = Field(
        default=None, ge=1, description="Server-side cap on max_tokens, whatever the request says."
    )
    context_length: int | None = Field(
        default=None, ge=16, description="Override the context length read from the model's config.json."
    )
    chat_template_kwargs: dict[str, bool | str | int | float] = Field(
        default_factory=dict,
        description="Extra variables for the chat template; only "
        + ", ".join(sorted(CHAT_TEMPLATE_KWARGS))
        + ".",
    )
    draft_model: str | None = Field(
        default=None,
        description="Speculative decoding: an alias (this one included), repo id or local directory whose"
        " model drafts tokens for this one to check. It must share the tokenizer. Used while a request"
        " decodes alone; greedy output is the same as without it.",
    )
    num_draft_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_NUM_DRAFT_TOKENS,
        description=f"Tokens the draft model proposes per step (default {DEFAULT_NUM_DRAFT_TOKENS});"
        " requests may set their own.",
    )
    kv_bits: Literal[4, 8] | None = Field(
        default=None,
        description="Quantize the KV cache to 4 or 8 bits: less memory for long contexts, slightly"
        " different output. Unset: full precision.",
    )
    kv_group_size: Literal[32, 64, 128] = Field(
        default=64, description="Group size of the quantized KV cache (must divide the model's head size)."
    )
    quantized_kv_start: int = Field(
        default=5000,
        ge=0,
        description="Quantize a sequence's keys and values once it holds this many tokens (0: from the start).",
    )
    chat_template: str | None = Field(
        default=None,
        description="A Jinja chat template file (relative to this file) used instead of the model's own.",
    )
    defaults: GenerationDefaults = Field(
        default_factory=GenerationDefaults, description="Request defaults for this alias."
    )
    parallel: Parallel = Field(
        default="tensor",
        description="With [distributed]: split the model's layers over the ranks (tensor) or give each "
        "rank a run of whole layers (pipeline; only for families mlx-lm can pipeline).",
    )
    pooling: Literal["last", "mean", "cls"] | None = Field(
        default=None,
        description=(
            "How embeddings pool the token states: the model's sentence-transformers files say"
            " when it has them, else 'last' (the last token, for decoder models)."
        ),
    )
    normalize: bool | None = Field(
        default=None,
        description="Whether embeddings are scaled to unit length (the model's files say, else true).",
    )

    _base_dir: Path | None = PrivateAttr(default=None)
    #: The draft model's weights as an alias config of their own, made when the config loads.
    _draft: ModelConfig | None = PrivateAttr(default=None)
    #: The text of ``chat_template``, read and checked at load.
    _template_text: str | None = PrivateAttr(default=None)

    @field_validator("model", "adapter", "draft_model", "chat_template")
    @classmethod
    def _plain_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.strip():
            raise ValueError("must not be empty")
        if len(value) > MAX_PATH_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must be a repo id or a path without control characters")
        return value

    @field_validator("model")
    @classmethod
    def _repo_or_path(cls, value: str) -> str:
        if not value.startswith(LOCAL_PREFIXES) and not REPO_ID.fullmatch(value):
            raise ValueError(
                f"{value!r} is neither a repo id like 'org/name' nor a local path (start it with ./ or /)"
            )
        return value

    @field_validator("draft_model")
    @classmethod
    def _draft_reference(cls, value: str | None) -> str | None:
        local = value is None or value.startswith(LOCAL_PREFIXES)
        if not local and not REPO_ID.fullmatch(value or "") and not ALIAS.fullmatch(value or ""):
            raise ValueError(f"{value!r} is neither an alias, a repo id like 'org/name' nor a local path")
        return value

    @model_validator(mode="after")
    def _options_need_their_switch(self) -> ModelConfig:
        if self.kv_bits is None:
            # Set to something else than the default (``config show`` writes every key out).
            fields = type(self).model_fields
            stray = [
                k for k in ("kv_group_size", "quantized_kv_start") if getattr(self, k) != fields[k].default
            ]
            if stray:
                raise ValueError(f"{' and '.join(stray)} {'needs' if len(stray) == 1 else 'need'} kv_bits")
        if self.draft_model is None and self.num_draft_tokens is not None:
            raise ValueError("num_draft_tokens needs draft_model")
        return self

    @field_validator("revision")
    @classmethod
    def _safe_revision(cls, value: str | None) -> str | None:
        if value is not None and (not REVISION.fullmatch(value) or ".." in value):
            raise ValueError(f"{value!r} is not a branch, tag or commit")
        return value

    @field_validator("aliases")
    @classmethod
    def _safe_aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not ALIAS.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid alias name")
        return value

    @field_validator("chat_template_kwargs")
    @classmethod
    def _allowed_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - CHAT_TEMPLATE_KWARGS)
        if unknown:
            allowed = ", ".join(sorted(CHAT_TEMPLATE_KWARGS))
            raise ValueError(f"not allowed: {', '.join(unknown)} (allowed: {allowed})")
        return value

    @property
    def is_local(self) -> bool:
        """True when ``model`` names a directory rather than a Hub repo."""
        return self.model.startswith(LOCAL_PREFIXES) or (
            self._base_dir is not None and _is_dir(self._base_dir / self.model)
        )

    def bind(self, base_dir: Path) -> None:
        """Remember the config file's directory, against which relative paths resolve."""
        self._base_dir = base_dir
        if self._draft is not None:
            self._draft.bind(base_dir)

    def link_draft(self, models: dict[str, ModelConfig]) -> None:
        """Resolve ``draft_model``: an alias of ``models``, else a repo id or a directory."""
        name = self.draft_model
        if name is None:
            self._draft = None
        elif name in models:  # a copy of its weights' keys: configs hold no references to others
            alias = models[name]
            self._draft = ModelConfig(
                model=alias.model,
                revision=alias.revision,
                adapter=alias.adapter,
                context_length=alias.context_length,
            )
        elif name.startswith(LOCAL_PREFIXES) or REPO_ID.fullmatch(name):
            self._draft = ModelConfig(model=name)
        else:
            raise ValueError(f"draft_model {name!r} is not an alias of this file, a repo id or a local path")

    @property
    def draft(self) -> ModelConfig | None:
        """The draft model's weights (an alias's, a repo's or a directory's) as a config of their own."""
        return self._draft

    @property
    def chat_template_path(self) -> Path | None:
        """The chat template file, absolute, when one is configured."""
        if self.chat_template is None:
            return None
        return ((self._base_dir or Path.cwd()) / Path(self.chat_template).expanduser()).resolve()

    @property
    def template_text(self) -> str | None:
        """The configured chat template's text (read and checked when the config loaded)."""
        return self._template_text

    def attach_template(self, text: str) -> None:
        """Keep the text of ``chat_template`` (the loader reads and checks it)."""
        self._template_text = text

    @property
    def local_path(self) -> Path | None:
        """The model directory, absolute, when ``model`` is a local path."""
        if not self.is_local:
            return None
        return ((self._base_dir or Path.cwd()) / Path(self.model).expanduser()).resolve()

    @property
    def adapter_path(self) -> Path | None:
        """The adapter directory, absolute, when an adapter is configured."""
        if self.adapter is None:
            return None
        return ((self._base_dir or Path.cwd()) / Path(self.adapter).expanduser()).resolve()

    @property
    def source(self) -> str:
        """What ``/v1/models`` shows: the repo id, or a local path as written (only its
        last part when absolute, so no response reveals where the user keeps files)."""
        if self.is_local and Path(self.model).expanduser().is_absolute():
            return Path(self.model).name
        return self.model


class MlxdConfig(BaseSettings):
    """The whole ``mlxd.toml``. Environment variables ``MLXD_SECTION__KEY`` override the file."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        env_prefix="MLXD_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    server: ServerConfig = Field(
        default_factory=ServerConfig, description="Where and how the daemon listens."
    )
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig, description="Model residency and scheduling."
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig, description="Caps on what one request may ask for."
    )
    defaults: GenerationDefaults = Field(
        default_factory=GenerationDefaults, description="Request defaults for every alias."
    )
    models: dict[str, ModelConfig] = Field(
        default_factory=dict, description="Aliases requests can name in 'model'."
    )
    distributed: DistributedConfig | None = Field(
        default=None,
        description="Several processes or Macs serving every alias with MLX's distributed runtime.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: init kwargs (command-line flags) > ``MLXD_*`` environment > the config file."""
        return init_settings, TypedEnvSource(settings_cls), FileSettingsSource(settings_cls)

    @field_validator("models")
    @classmethod
    def _alias_names(cls, value: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        seen: dict[str, str] = {}
        for alias, model in value.items():
            if not ALIAS.fullmatch(alias):
                raise ValueError(f"{alias!r} is not a valid alias name (letters, digits, '_', '-', '.', ':')")
            for name in (alias, *model.aliases):
                if name in seen and seen[name] != alias:
                    raise ValueError(f"name {name!r} is used by both {seen[name]!r} and {alias!r}")
                seen[name] = alias
        defaults = [alias for alias, model in value.items() if model.default]
        if len(defaults) > 1:
            raise ValueError(f"only one alias may set default = true (found {', '.join(defaults)})")
        for alias, model in value.items():
            try:
                model.link_draft(value)
            except ValueError as exc:
                raise ValueError(f"{alias}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _distributable(self) -> MlxdConfig:
        """What several ranks cannot serve is refused up front, naming the alias."""
        if self.distributed is None:
            return self
        # As in mlx_lm.server, whose distributed mode refuses both.
        for alias, model in self.models.items():
            for key, value, what in (
                ("adapter", model.adapter, "LoRA adapters"),
                ("draft_model", model.draft_model, "draft models (speculative decoding)"),
            ):
                if value is not None:
                    raise ValueError(
                        f"models.{alias}.{key}: {what} are not served across several ranks"
                        f" (remove [distributed] or the {key})"
                    )
        return self

    def default_alias(self) -> str | None:
        """The alias served when a request names no model: the marked one, else the only one."""
        for alias, model in self.models.items():
            if model.default:
                return alias
        if len(self.models) == 1:
            return next(iter(self.models))
        return None

    def find_alias(self, name: str) -> str | None:
        """The alias a request's ``model`` names: an alias, one of its ``aliases``, or its repo id."""
        if name in self.models:
            return name
        for alias, model in self.models.items():
            if name in model.aliases:
                return alias
        for alias, model in self.models.items():
            if not model.is_local and model.model == name and model.adapter is None:
                return alias
        return None

    def generation_defaults(self, alias: str) -> GenerationDefaults:
        """Merged defaults for an alias: alias ``defaults`` > ``[defaults]`` > built-in."""
        merged = BUILTIN_DEFAULTS.model_dump()
        for layer in (self.defaults, self.models[alias].defaults):
            merged.update({k: v for k, v in layer.model_dump().items() if v is not None})
        return GenerationDefaults(**merged)
