"""Aliases that share one model's weights keep their own ``context_length`` (real MLX).

The weights are loaded once for every alias that names the model; a context override is
the alias's, so whichever alias loads the weights first must not set the context of the
others (found by the reliability run: an alias with ``context_length = 128`` served a
2,000-token prompt after its sibling had loaded the model).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import serving

pytestmark = [pytest.mark.mlx, pytest.mark.server]


@pytest.mark.parametrize("first", ["full", "short"])
def test_each_alias_keeps_its_own_context(tiny_model_dir: Path, tmp_path: Path, first: str) -> None:
    config = f"""
[server]
port = 0
[models.full]
model = "{tiny_model_dir}"
[models.short]
model = "{tiny_model_dir}"
context_length = 128
"""
    long_prompt = {"messages": [{"role": "user", "content": "word " * 300}], "max_tokens": 2}
    with serving(tmp_path, config) as daemon, daemon.client() as http:
        warm = http.post("/v1/completions", json={"model": first, "prompt": "hi", "max_tokens": 1})
        assert warm.status_code == 200
        short = http.post("/v1/chat/completions", json={**long_prompt, "model": "short"})
        full = http.post("/v1/chat/completions", json={**long_prompt, "model": "full"})
        assert len(daemon.status()["models"]) == 1  # type: ignore[arg-type]  # one copy of the weights
    assert short.status_code == 400
    assert short.json()["error"]["code"] == "context_length_exceeded"
    assert "context of 128" in short.json()["error"]["message"]
    assert full.status_code == 200, full.text
