"""``[models.<alias>]``: one name requests can use, backed by a model and maybe an adapter.

Part of the schema (``mlxd.config.schema``). A ``model`` is a Hugging Face repo id or a
local directory (relative to the config file); the checks here are the ones a value can
fail on its own, the whole-file rules (alias names, drafts naming aliases) are the schema's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from mlxd.config.distributed import Parallel
from mlxd.config.generation import GenerationDefaults
from mlxd.config.values import MAX_PATH_LENGTH, Duration, Section, Strings

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


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long, a NUL byte: not a directory we can use
        return False


#: Tokens a draft model proposes per step unless the alias or the request says otherwise
#: (mlx_lm.server's default).
DEFAULT_NUM_DRAFT_TOKENS = 3
#: Most tokens a draft may propose per step.
MAX_NUM_DRAFT_TOKENS = 32


class ModelConfig(Section):
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

    @property
    def repo_name(self) -> str | None:
        """The Hub repo id a request may name this alias by: none for a local model, nor for
        an adapter (its base's repo names the base)."""
        return None if self.is_local or self.adapter is not None else self.model

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
