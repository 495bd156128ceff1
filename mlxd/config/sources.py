"""The parsed config file as a pydantic-settings source ranked below the environment.

pydantic-settings ranks init kwargs above the environment, so passing the file's data as
kwargs would let the file beat ``MLXD_*`` variables. The loader instead publishes the
file's data here for the duration of one construction (a context variable, so threads
and tasks loading different files never see each other's data).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

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
