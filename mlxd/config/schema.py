"""The ``mlxd.toml`` schema: one frozen pydantic-settings model of its sections.

Every field carries a description: the JSON Schema, ``mlxd config init`` and the README
reference are generated from them. Unknown keys are errors, so typos never pass, and
values are strict: ``max_queue = 1.0``, ``preload = 1`` or ``log_prompts = "off"`` are
errors, not guesses (sizes and durations still take their string spellings, and lists
arrive from TOML as arrays of strings). The sections live beside it: ``sections``
(server, runtime, limits), ``models`` (each alias), ``generation`` (request defaults) and
``distributed`` (several ranks).
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlxd.config.distributed import DistributedConfig
from mlxd.config.generation import BUILTIN_DEFAULTS, GenerationDefaults
from mlxd.config.models import ALIAS, ModelConfig
from mlxd.config.sections import LimitsConfig, RuntimeConfig, ServerConfig
from mlxd.config.sources import FileSettingsSource, TypedEnvSource


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
        """The alias a request's ``model`` names: an alias, one of its ``aliases``, or its repo
        id; else the one alias whose names differ from it only in case (as the Hub's repo ids
        and Ollama's model names match), never a guess between two."""
        if name in self.models:
            return name
        for alias, model in self.models.items():
            if name in model.aliases:
                return alias
        for alias, model in self.models.items():
            if model.repo_name == name:
                return alias
        folded = name.casefold()
        matches = {
            alias
            for alias, model in self.models.items()
            for other in (alias, *model.aliases, *([model.repo_name] if model.repo_name else []))
            if other.casefold() == folded
        }
        return matches.pop() if len(matches) == 1 else None

    def generation_defaults(self, alias: str) -> GenerationDefaults:
        """Merged defaults for an alias: alias ``defaults`` > ``[defaults]`` > built-in."""
        merged = BUILTIN_DEFAULTS.model_dump()
        for layer in (self.defaults, self.models[alias].defaults):
            merged.update({k: v for k, v in layer.model_dump().items() if v is not None})
        return GenerationDefaults(**merged)
