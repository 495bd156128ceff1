"""A model whose weights hold NaN or Inf is refused at load with one line; the rest keeps serving."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from mlxd.errors import ModelCorruptError
from tests.conftest import RunningDaemon, serving

pytestmark = pytest.mark.mlx


def poison(model_dir: Path, value: float, *, layer: int = 0) -> str:
    """Replace one weight tensor of ``model_dir`` with ``value`` everywhere; return its name."""
    import mlx.core as mx

    weights = mx.load(str(model_dir / "model.safetensors"))
    name = f"model.layers.{layer}.mlp.up_proj.weight"
    weights[name] = mx.full(weights[name].shape, value, dtype=weights[name].dtype)
    mx.save_safetensors(str(model_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    return name


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(tiny_model_dir: Path, tmp_path: Path, value: float) -> None:
    from mlxd.runtime.mlx.loading import load_base

    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "bad"))
    name = poison(model, value)
    with pytest.raises(ModelCorruptError) as caught:
        load_base(model)
    assert caught.value.message == (
        f"bad: the weights are not finite (NaN or Inf in {name}); refusing to load them"
    )
    load_base(tiny_model_dir)  # the check passes a sound model


@pytest.fixture(scope="module")
def daemon_with_a_nan_model(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("nan")
    poison(Path(shutil.copytree(tiny_model_dir, root / "nan-model")), float("nan"), layer=1)
    with serving(
        root,
        f'[server]\nport = 0\n[models.tiny]\nmodel = "{tiny_model_dir}"\n'
        '[models.nan]\nmodel = "./nan-model"\n',
    ) as running:
        yield running


@pytest.mark.server
def test_the_daemon_refuses_the_model_and_keeps_serving_the_others(
    daemon_with_a_nan_model: RunningDaemon,
) -> None:
    client = openai.OpenAI(base_url=daemon_with_a_nan_model.url + "/v1", api_key="x", max_retries=0)
    for _ in range(2):  # refused every time, not loaded on a second try
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="nan", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.code == "model_corrupt"
        assert "the weights are not finite (NaN or Inf in model.layers.1.mlp.up_proj.weight)" in (
            caught.value.message
        )
        assert "\n" not in caught.value.message
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0, logprobs=True
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 3
    assert reply.choices[0].logprobs is not None
    content = reply.choices[0].logprobs.content or []
    assert all(item.logprob is not None and item.logprob <= 0 for item in content)
    assert "nan" not in [m["alias"] for m in daemon_with_a_nan_model.status()["models"]]  # type: ignore[index, union-attr]
