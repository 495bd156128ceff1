"""An alias's own chat template file: read and checked when the config loads.

The template is rendered per request by the model's tokenizer (Hugging Face's Jinja
environment); here it is only proven to work, in a sandbox like the one the tokenizer
uses, on a two-message conversation. A template that cannot be read, does not parse,
raises, or leaves the messages out is a config error naming the file, so a broken
template never reaches a request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Largest template file accepted (the longest real templates are a few tens of KB).
MAX_TEMPLATE_BYTES = 1 << 20
#: What the check renders: both contents must appear in the output.
_PROBE = (
    {"role": "user", "content": "mlxd-probe-question"},
    {"role": "assistant", "content": "mlxd-probe-answer"},
)


class TemplateProblem(ValueError):
    """Why a chat template file cannot be used (one line)."""


def _raise(message: str) -> None:
    raise TemplateProblem(message)


def read_template(path: Path) -> str:
    """The text of a chat template file, after rendering a two-message conversation with it.

    Raises:
        TemplateProblem: unreadable, too large, not UTF-8, not Jinja, or fails to render.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TemplateProblem("file not found") from None
    except IsADirectoryError:
        raise TemplateProblem("is a directory, not a file") from None
    except OSError as exc:
        raise TemplateProblem(f"cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_TEMPLATE_BYTES:
        raise TemplateProblem(f"larger than {MAX_TEMPLATE_BYTES // 1024} KB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateProblem("not UTF-8 text") from None
    check_template(text)
    return text


def check_template(text: str) -> None:
    """Render ``text`` on a two-message conversation in a Jinja sandbox.

    Raises:
        TemplateProblem: it does not parse, raises, or its output lacks the messages.
    """
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def tojson(value: Any, indent: int | None = None, **_: Any) -> str:
        return json.dumps(value, indent=indent, ensure_ascii=False)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: "2000-01-01"
    try:
        template = env.from_string(text)
        out = template.render(
            messages=[dict(m) for m in _PROBE],
            add_generation_prompt=True,
            bos_token="",
            eos_token="",
            tools=None,
        )
    except TemplateProblem as exc:
        raise TemplateProblem(f"raised an error on a two-message conversation: {exc}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"not a valid Jinja template (line {exc.lineno}): {exc.message}") from None
    except Exception as exc:  # anything the template does wrong while rendering
        raise TemplateProblem(
            f"failed to render a two-message conversation: {type(exc).__name__}: {exc}"
        ) from None
    missing = [m["role"] for m in _PROBE if m["content"] not in out]
    if missing:
        raise TemplateProblem(f"leaves the {' and the '.join(missing)} message out of the prompt")
