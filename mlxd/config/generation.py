"""``[defaults]`` and ``[models.<alias>.defaults]``: the request defaults of the config.

A request field wins over an alias's defaults, which win over ``[defaults]``, which win
over ``BUILTIN_DEFAULTS`` (the seed server's defaults where sensible).
"""

from __future__ import annotations

from pydantic import Field

from mlxd.config.values import Section, Strings

__all__ = ["BUILTIN_DEFAULTS", "GenerationDefaults"]


class GenerationDefaults(Section):
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
    xtc_probability: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="XTC sampling: the chance per token of excluding the top choices; 0 turns it off.",
    )
    xtc_threshold: float | None = Field(
        default=None,
        ge=0,
        le=0.5,
        description="XTC sampling: tokens more likely than this are the 'top choices' (all but the least"
        " likely of them are dropped).",
    )
    presence_context_size: int | None = Field(
        default=None, ge=1, description="How many recent tokens the presence penalty looks at."
    )
    frequency_context_size: int | None = Field(
        default=None, ge=1, description="How many recent tokens the frequency penalty looks at."
    )


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
    xtc_probability=0.0,
    xtc_threshold=0.1,
    presence_context_size=20,
    frequency_context_size=20,
)
