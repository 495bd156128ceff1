"""The config's two outside sources: the parsed file, and the ``MLXD_*`` environment.

pydantic-settings ranks init kwargs above the environment, so passing the file's data as
kwargs would let the file beat ``MLXD_*`` variables. The loader instead publishes the
file's data here for the duration of one construction (a context variable, so threads
and tasks loading different files never see each other's data).

The schema is strict: a TOML value must already have its key's type (``"16"`` is no
integer, ``1`` no boolean). Environment variables are strings by nature, so
``TypedEnvSource`` converts each one to the type of the key it sets, deliberately and
strictly (pydantic's string parsing: ``MLXD_SERVER__PORT=9000`` is 9000, ``=9.5`` stays a
string and fails validation naming the variable).
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WrapValidator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource, PydanticBaseSettingsSource

_VALIDATORS = (BeforeValidator, AfterValidator, PlainValidator, WrapValidator)

_FILE_DATA: ContextVar[Mapping[str, Any] | None] = ContextVar("mlxd_config_file", default=None)


class FileSettingsSource(PydanticBaseSettingsSource):
    """The config file's table, as published by ``file_layer``; empty outside of it."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: ``__call__`` returns the whole table at once."""
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        """Every key of the file, unknown ones included, so they fail validation by name."""
        return copy.deepcopy(dict(_FILE_DATA.get() or {}))


@contextmanager
def file_layer(data: Mapping[str, Any]) -> Iterator[None]:
    """Make ``data`` the file layer of every ``MlxdConfig`` built inside the block."""
    token = _FILE_DATA.set(data)
    try:
        yield
    finally:
        _FILE_DATA.reset(token)


class TypedEnvSource(EnvSettingsSource):
    """``MLXD_SECTION__KEY`` variables, each string converted to the type of its key."""

    def __call__(self) -> dict[str, Any]:
        """The nested values the environment sets, typed."""
        return typed_strings(super().__call__(), self.settings_cls)


def typed_strings(data: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """``data`` with every string leaf parsed as the type of its key in ``model``.

    Values that do not parse (and unknown keys) stay as they are, for validation to
    reject with the key path; lists and tables (JSON in the environment) are left alone.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = _typed_table(value, field.annotation)
        elif isinstance(value, str):
            out[key] = _parse(value, field)
        else:
            out[key] = value
    return out


def _typed_table(value: Mapping[str, Any], annotation: Any) -> Any:
    if (model := model_in(annotation)) is not None:
        return typed_strings(value, model)
    if typing.get_origin(annotation) is dict and (model := model_in(typing.get_args(annotation)[1])):
        return {k: typed_strings(v, model) if isinstance(v, Mapping) else v for k, v in value.items()}
    return value


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation is, or holds in a union (``Section | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (found := model_in(arg)) is not None:
                return found
    return None


def _parse(value: str, field: FieldInfo) -> Any:
    try:
        return _adapter(field).validate_strings(value, strict=True)
    except ValidationError:
        return value


@lru_cache(maxsize=256)
def _adapter(field: FieldInfo) -> TypeAdapter[Any]:
    """The field's type with its parsing validators but not its bounds: a value out of
    bounds must still arrive typed, so that validation says which bound it breaks."""
    validators = [m for m in field.metadata if isinstance(m, _VALIDATORS)]
    annotation: Any = Annotated[(field.annotation, *validators)] if validators else field.annotation
    return TypeAdapter(annotation)
