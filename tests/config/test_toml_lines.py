"""The TOML line scanner that lets errors say where a key is defined."""

from __future__ import annotations

import tomllib

from mlxd.config.toml_lines import key_lines, line_of

DOC = '''\
# a comment with key = "value"
title = "x"

[server]
port = 8080  # trailing comment
"quoted.key" = 1
notes = """
fake = "not a key"
[not.a.table]
"""
hosts = [
  "a",
  "b = c",
]
literal = \'\'\'
[nope]
\'\'\'

[models.qwen.defaults]
temperature = 0.2

[models.qwen]
model = "org/name"
chat_template_kwargs = { enable_thinking = false }
a.b.c = 1

[[items]]
name = "first"
'''


def test_the_document_is_valid_toml() -> None:
    assert tomllib.loads(DOC)["server"]["notes"].startswith("fake")


def test_keys_and_tables_get_their_lines() -> None:
    lines = key_lines(DOC)
    assert lines[("title",)] == 2
    assert lines[("server",)] == 4
    assert lines[("server", "port")] == 5
    assert lines[("server", "quoted.key")] == 6
    assert lines[("server", "notes")] == 7
    assert lines[("server", "hosts")] == 11
    assert lines[("server", "literal")] == 15
    assert lines[("models", "qwen", "defaults", "temperature")] == 20
    assert lines[("models", "qwen", "model")] == 23
    assert lines[("models", "qwen", "a", "b", "c")] == 25
    assert lines[("items", "name")] == 28


def test_contents_of_strings_and_arrays_are_not_keys() -> None:
    lines = key_lines(DOC)
    assert ("server", "fake") not in lines
    assert ("not", "a", "table") not in lines
    assert ("nope",) not in lines
    assert ("server", "b") not in lines


def test_an_explicit_table_header_beats_an_implicit_one() -> None:
    # [models.qwen.defaults] (line 19) implies models.qwen, but [models.qwen] (line 22) defines it.
    assert key_lines(DOC)[("models", "qwen")] == 22
    assert key_lines(DOC)[("models",)] == 19


def test_line_of_falls_back_to_the_enclosing_key() -> None:
    lines = key_lines(DOC)
    # Keys inside an inline table, list items and missing keys point at what holds them.
    assert line_of(lines, ("models", "qwen", "chat_template_kwargs", "enable_thinking")) == 24
    assert line_of(lines, ("server", "hosts", 1)) == 11
    assert line_of(lines, ("server", "missing")) == 4
    assert line_of(lines, ("elsewhere",)) is None
