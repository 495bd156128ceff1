"""mlxd: a local LLM daemon serving an OpenAI-compatible API from MLX models.

Importing this package imports neither MLX, nor Litestar, nor Typer.
"""

__version__ = "0.1.0"
