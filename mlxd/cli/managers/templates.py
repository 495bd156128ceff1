"""Find the service-file templates shipped in ``deploy/`` (packaged or in a source checkout)."""

from __future__ import annotations

from pathlib import Path

from mlxd.errors import ServiceManagerError

_PACKAGE = Path(__file__).resolve().parents[2]


def template_path(*parts: str) -> Path:
    """``deploy/<parts>``: inside the installed package first, else beside it in a checkout."""
    for base in (_PACKAGE / "deploy", _PACKAGE.parent / "deploy"):
        candidate = base.joinpath(*parts)
        if candidate.is_file():
            return candidate
    raise ServiceManagerError(
        f"the service template deploy/{'/'.join(parts)} is missing from this installation",
        hint="reinstall mlxd",
    )
