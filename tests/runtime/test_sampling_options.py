"""mlx_lm.server's sampling and template options through the daemon: XTC, windowed
presence and frequency penalties, and an alias's own chat template.

Real mlx-lm on the tiny model through the official OpenAI client. Random weights write
gibberish, so the checks are equalities and differences under fixed seeds and greedy
decoding, and prompt token counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import RunningDaemon, serving

pytestmark = [pytest.mark.mlx, pytest.mark.server]

#: A template that puts a long preamble before the conversation (ChatML otherwise).
PIRATE = """{{ 'You are a pirate. Answer as a pirate would, with many words about the sea and ships.\\n' }}
{%- for message in messages %}<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@pytest.fixture(scope="module")
def options_daemon(
    tiny_model_dir: Path, plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("sampling-options")
    (root / "templates").mkdir()
    (root / "templates" / "pirate.jinja").write_text(PIRATE, encoding="utf-8")
    with serving(
        root,
        f"""
[server]
port = 0

[runtime]
keep_alive = "forever"
max_loaded_models = 3

[defaults]
temperature = 0.0
max_tokens = 24

[models.tiny]
model = "{tiny_model_dir}"

[models.xtc]
model = "{tiny_model_dir}"
[models.xtc.defaults]
temperature = 1.0
xtc_probability = 1.0
xtc_threshold = 0.0

[models.pirate]
model = "{tiny_model_dir}"
chat_template = "templates/pirate.jinja"

[models.plain]
model = "{plain_model_dir}"

[models.plain-pirate]
model = "{plain_model_dir}"
chat_template = "templates/pirate.jinja"
""",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(options_daemon: RunningDaemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=options_daemon.url + "/v1", api_key="unused", max_retries=0)


def _text(client: openai.OpenAI, **kwargs: Any) -> str:
    reply = client.completions.create(model=kwargs.pop("model", "tiny"), prompt="the sea and ships", **kwargs)
    return reply.choices[0].text


def test_xtc_with_probability_zero_is_plain_sampling_under_a_seed(client: openai.OpenAI) -> None:
    plain = _text(client, temperature=1.0, seed=7)
    assert (
        _text(client, temperature=1.0, seed=7, extra_body={"xtc_probability": 0.0, "xtc_threshold": 0.1})
        == plain
    )
    # Always excluding the top choices samples other tokens, reproducibly under the seed.
    xtc = {"xtc_probability": 1.0, "xtc_threshold": 0.0}
    excluded = _text(client, temperature=1.0, seed=7, extra_body=xtc)
    assert excluded != plain
    assert _text(client, temperature=1.0, seed=7, extra_body=xtc) == excluded
    # An alias's defaults say the same thing as the request did.
    assert _text(client, model="xtc", seed=7) == excluded


def test_xtc_rows_batch_beside_plain_rows(client: openai.OpenAI) -> None:
    """Rows with and without XTC decode in one batch, each with its own sampler."""
    from concurrent.futures import ThreadPoolExecutor

    xtc = {"xtc_probability": 1.0, "xtc_threshold": 0.0}
    alone = [_text(client, temperature=1.0, seed=s, extra_body=xtc if s % 2 else {}) for s in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(
            pool.map(
                lambda s: _text(client, temperature=1.0, seed=s, extra_body=xtc if s % 2 else {}), range(4)
            )
        )
    assert together == alone


def test_presence_and_frequency_penalties_look_back_over_their_windows(client: openai.OpenAI) -> None:
    def run(**body: Any) -> str:
        return _text(client, max_tokens=48, extra_body=body)

    narrow = run(presence_penalty=2.0, presence_context_size=1)
    wide = run(presence_penalty=2.0, presence_context_size=64)
    assert narrow != wide
    assert run(presence_penalty=2.0, presence_context_size=64) == wide
    assert run(frequency_penalty=2.0, frequency_context_size=1) != run(
        frequency_penalty=2.0, frequency_context_size=64
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"xtc_threshold": 0.6}, "xtc_threshold"),  # killed mlx_lm.server's generation thread
        ({"xtc_probability": 1.5}, "xtc_probability"),
        ({"presence_context_size": 0}, "presence_context_size"),
        ({"frequency_context_size": -3}, "frequency_context_size"),
    ],
)
def test_out_of_range_values_are_400s_naming_the_field(
    client: openai.OpenAI, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _text(client, extra_body=body)
    assert caught.value.body["param"] == param  # type: ignore[index]
    assert _text(client, max_tokens=2) is not None


def _prompt_tokens(client: openai.OpenAI, model: str) -> int:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Where is the ship?"}], max_tokens=2
    )
    assert reply.usage is not None
    return reply.usage.prompt_tokens


def test_an_alias_template_replaces_the_models_own(client: openai.OpenAI) -> None:
    preamble = 17  # words of the template's first line
    own, pirate = _prompt_tokens(client, "tiny"), _prompt_tokens(client, "pirate")
    assert pirate >= own + preamble // 2
    # A model without a template of its own uses the alias's instead of role_mapping.
    plain, plain_pirate = _prompt_tokens(client, "plain"), _prompt_tokens(client, "plain-pirate")
    assert plain_pirate == pirate
    assert plain != plain_pirate
    # role_mapping in a request still wins, as it does over the model's own template.
    mapped = [
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Where is the ship?"}],
            max_tokens=2,
            extra_body={"role_mapping": {"user": "U: "}},
        ).usage
        for model in ("pirate", "tiny")
    ]
    assert mapped[0] is not None
    assert mapped[1] is not None
    assert mapped[0].prompt_tokens == mapped[1].prompt_tokens
