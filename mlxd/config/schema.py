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
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlxd.config.sources import FileSettingsSource, TypedEnvSource
from mlxd.config.units import parse_size
from mlxd.config.values import Duration, MemoryBudget, Size, Strings, is_loopback

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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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


class GenerationDefaults(_Section):
    """Request defaults: a request field wins over an alias's defaults, which win over ``[defaults]``."""

    max_tokens: int | None = Field(
        default=None, ge=1, description="Tokens to generate when a request does not say."
    )
    temperature: float | None = Field(
        default=None, ge=0, le=2, description="Sampling temperature; 0 is greedy."
    )
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling threshold.")
    top_k: int | None = Field(
        default=None, ge=0, description="Sample among the k most likely tokens; 0 turns it off."
    )
    min_p: float | None = Field(
        default=None, ge=0, le=1, description="Drop tokens less likely than min_p times the top token."
    )
    repetition_penalty: float | None = Field(
        default=None,
        gt=0,
        description="Multiplicative penalty on recently generated tokens; 1.0 turns it off.",
    )
    repetition_context_size: int | None = Field(
        default=None, ge=1, description="How many recent tokens the repetition penalty looks at."
    )
    presence_penalty: float | None = Field(
        default=None, ge=-2, le=2, description="Additive penalty on tokens already present."
    )
    frequency_penalty: float | None = Field(
        default=None, ge=-2, le=2, description="Additive penalty proportional to a token's count."
    )
    stop: Strings | None = Field(default=None, description="Stop strings used when a request gives none.")


#: What applies when neither the request nor the config says (the seed's defaults where sensible).
BUILTIN_DEFAULTS = GenerationDefaults(
    max_tokens=512,
    temperature=0.7,
    top_p=1.0,
    top_k=0,
    min_p=0.0,
    repetition_penalty=1.0,
    repetition_context_size=20,
    presence_penalty=0.0,
    frequency_penalty=0.0,
    stop=(),
)


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
    defaults: GenerationDefaults = Field(
        default_factory=GenerationDefaults, description="Request defaults for this alias."
    )

    _base_dir: Path | None = PrivateAttr(default=None)

    @field_validator("model", "adapter")
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
        return value

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
