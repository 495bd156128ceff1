"""What every rank checks before a split load: models that cannot be split are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxd.errors import ModelUnsupportedError
from mlxd.runtime.specs import ModelSpec

pytestmark = [pytest.mark.mlx]


def test_an_encoder_embedding_model_is_refused_before_mlx_lm_reads_it(tmp_path: Path) -> None:
    from mlxd.runtime.demo_embedders import build_encoder_model
    from mlxd.runtime.mlx.sharded import preflight

    path = build_encoder_model(tmp_path / "bge", family="bert")
    spec = ModelSpec(str(path), local_path=path, label="bge")
    with pytest.raises(ModelUnsupportedError) as caught:
        preflight(spec, path, 2)
    assert (
        caught.value.message == "bge: bert encoder embedding models are not served across several ranks yet"
    )
    assert caught.value.hint == "serve them from a daemon without [distributed]"
