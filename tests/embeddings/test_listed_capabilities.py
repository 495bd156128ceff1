"""What the listings (``/v1/models``, ``/api/show``, ``mlxd models list``) promise an embedding
model: ``embedding``, except across several ranks, which serve no embeddings yet (a 422 there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxd.cli.models import _alias_row
from mlxd.config.loader import load_config
from mlxd.http.dialects.ollama.models import model_facts
from mlxd.http.routes.openai import _capabilities

pytestmark = [pytest.mark.mlx]


@pytest.mark.parametrize("ranks", [1, 2])
def test_embedding_is_listed_only_where_it_is_served(tmp_path: Path, ranks: int) -> None:
    from mlxd.runtime.demo_embedders import build_embedding_model

    model = build_embedding_model(tmp_path / "embed")
    hosts = ", ".join(['"127.0.0.1"'] * ranks)
    split = f"\n[distributed]\nhosts = [{hosts}]\n" if ranks > 1 else ""
    path = tmp_path / "mlxd.toml"
    path.write_text(f'[models.embed]\nmodel = "{model}"\n{split}', encoding="utf-8")
    config = load_config(path)
    listed = _capabilities(config, "embed")
    shown = model_facts(config, "embed").capabilities
    assert "completion" in listed
    assert "completion" in shown
    assert ("embedding" in listed) is (ranks == 1)
    assert ("embedding" in shown) is (ranks == 1)
    row = _alias_row("embed", config.models["embed"], {}, set(), split=config.distributed is not None)
    assert row.capabilities == (["embedding"] if ranks == 1 else [])
