"""Request bodies decoded strictly by our own decoder, inside Litestar's routing.

Litestar decodes ``data`` by converting builtins with type coercion (``"8"`` becomes
8). A DTO is Litestar's hook for decoding raw bytes itself, so ``StrictBody[T]`` keeps
the typed ``data`` parameter and the OpenAPI schema generated from ``T`` while the
bytes go through ``mlxd.protocol.decode`` (strict types, bounded depth, clear errors).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Generic, TypeVar

import msgspec
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.openapi.spec import Reference, Schema
from litestar.typing import FieldDefinition

from mlxd.protocol.decode import decode_body

T = TypeVar("T")


class StrictBody(AbstractDTO[T], Generic[T]):
    """``dto=StrictBody[SomeStruct]`` on a route: its body decoded strictly as ``SomeStruct``."""

    def decode_bytes(self, value: bytes) -> Any:
        """The raw body, decoded strictly (the only path Litestar takes for a DTO'd body)."""
        return decode_body(value, self.model_type)

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        """Already-parsed values (form data; not used by JSON routes), converted strictly."""
        return msgspec.convert(value, self.model_type, strict=True)

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        """No transfer model is generated: the wire type is decoded as it is."""
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        """Nothing is nested into a transfer model."""
        return False

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        """Nothing to prepare per handler."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        """The request body's schema is the wire type's own."""
        schema: Reference | Schema = schema_creator.for_field_definition(
            FieldDefinition.from_annotation(cls.model_type)
        )
        return schema
