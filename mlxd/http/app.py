"""``create_app``: the Litestar application, wrapped in the guards. No import-time side effects."""

from __future__ import annotations

from typing import cast

from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from mlxd import __version__
from mlxd.http.errors import exception_handler
from mlxd.http.guards import ASGIApp, Guards
from mlxd.http.metrics import Metrics
from mlxd.http.observe import Observe
from mlxd.http.routes.admin import admin_router
from mlxd.http.routes.anthropic import anthropic_router
from mlxd.http.routes.embeddings import embeddings_router
from mlxd.http.routes.ollama import ollama_router, root_router
from mlxd.http.routes.openai import openai_router
from mlxd.http.routes.responses import responses_router
from mlxd.http.state import DaemonState


def create_litestar(state: DaemonState) -> Litestar:
    """The routed application (without the guards), e.g. for its OpenAPI schema."""
    return Litestar(
        route_handlers=[
            openai_router(state),
            embeddings_router(state),
            responses_router(state),
            anthropic_router(state),
            ollama_router(state),
            root_router(),
            admin_router(state),
        ],
        exception_handlers={Exception: exception_handler},
        openapi_config=OpenAPIConfig(title="mlxd", version=__version__, path="/openapi"),
        debug=False,
        logging_config=None,
    )


def create_app(state: DaemonState) -> ASGIApp:
    """The daemon's ASGI app: request ids and metrics, then the guards, then the routes."""
    state.metrics = Metrics(state)
    app = create_litestar(state)
    return Observe(Guards(cast(ASGIApp, app), state), state.metrics)
