"""Model-directory validation, file selection and error mapping: pure functions, no Hub."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlxd.errors import HubError
from mlxd.hub import (
    HubEnv,
    PlainReporter,
    PullResult,
    plan_removal,
    resolve_cached_model,
    supported_model_types,
)
from mlxd.hub.errors import translate
from mlxd.hub.files import RemoteFile, select_files
from mlxd.hub.validate import validate_model_dir
from tests.hub.helpers import safetensors_bytes, sharded_model


@pytest.fixture
def model_dir(tmp_path: Path, tiny_model_files: dict[str, bytes]) -> Path:
    path = tmp_path / "model"
    path.mkdir()
    for name, data in tiny_model_files.items():
        (path / name).write_bytes(data)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(HubError) as info:
        validate_model_dir(path, name="org/tiny")
    return info.value.message


def edit_config(path: Path, **changes: object) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_a_complete_model_passes(model_dir: Path) -> None:
    validate_model_dir(model_dir)


def test_sharded_model_with_remapped_type_passes(tmp_path: Path) -> None:
    for name, data in sharded_model({"model_type": "mistral"}, [100, 200]).items():
        (tmp_path / name).write_bytes(data)
    validate_model_dir(tmp_path)


def test_code_and_model_file_are_refused(model_dir: Path) -> None:
    edit_config(model_dir, model_file="evil.py")
    assert (
        refusal(model_dir)
        == "org/tiny: config.json asks to import Python code (model_file); mlxd never runs it"
    )
    (model_dir / "evil.py").write_text("import os")
    assert (
        refusal(model_dir) == "org/tiny contains code (evil.py); mlxd never runs code from a model directory"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"model_type": "nomic_bert"},  # an encoder family mlx-embeddings does not load either
            "org/tiny is not an MLX model: model_type 'nomic_bert' is not supported by the installed mlx-lm",
        ),
        ({"model_type": None}, "org/tiny is not an MLX model: config.json has no model_type"),
        ({"model_type": "cache"}, "model_type 'cache' is not supported"),  # a helper module, not a model
    ],
)
def test_unsupported_architectures_are_refused(
    model_dir: Path, change: dict[str, object], message: str
) -> None:
    edit_config(model_dir, **change)
    assert message in refusal(model_dir)


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta", "modernbert"])
def test_encoder_families_pass_for_mlx_embeddings(model_dir: Path, model_type: str) -> None:
    edit_config(model_dir, model_type=model_type)
    validate_model_dir(model_dir, name="org/tiny")  # the runtime loads them through mlxd[embeddings]


@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "lfm2-vl", "LFM2-VL"])
def test_vision_families_of_mlx_vlm_pass_and_say_vision(model_dir: Path, model_type: str) -> None:
    """Named as mlx-vlm names them, its own renames included ("lfm2-vl" is its lfm2_vl)."""
    pytest.importorskip("mlx_vlm")
    from mlxd.hub.capabilities import capabilities

    edit_config(model_dir, model_type=model_type, vision_config={"hidden_size": 8})
    validate_model_dir(model_dir, name="org/tiny")
    assert "vision" in capabilities(model_dir)
    edit_config(model_dir, model_type="no_such_vlm")
    assert "vision" not in capabilities(model_dir)


def test_broken_config(model_dir: Path) -> None:
    (model_dir / "config.json").write_text("{not json")
    assert refusal(model_dir).startswith("org/tiny: config.json is not valid JSON")
    (model_dir / "config.json").write_text("[1, 2]")
    assert refusal(model_dir) == "org/tiny: config.json is not a JSON object"
    (model_dir / "config.json").unlink()
    assert refusal(model_dir) == "org/tiny: config.json is missing"


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (safetensors_bytes({"w": b"x" * 100}, truncate=10), "model.safetensors is incomplete ("),
        (safetensors_bytes({"w": b"x" * 100}) + b"extra", "model.safetensors is longer than its header says"),
        (b"\xff" * 8 + b"{}", "model.safetensors has a corrupt safetensors header"),
        (b"\x02\x00\x00\x00\x00\x00\x00\x00{]", "model.safetensors has an unreadable safetensors header"),
        (b"abc", "model.safetensors is truncated"),
    ],
)
def test_damaged_weights_are_refused(model_dir: Path, weights: bytes, message: str) -> None:
    (model_dir / "model.safetensors").write_bytes(weights)
    assert message in refusal(model_dir)


def test_weights_must_be_model_safetensors(model_dir: Path) -> None:
    (model_dir / "model.safetensors").rename(model_dir / "weights.safetensors")
    (model_dir / "pytorch_model.bin").write_bytes(b"pickle")
    assert refusal(model_dir) == "org/tiny is not an MLX model: no model*.safetensors weights"


def test_index_must_name_present_files_inside_the_directory(tmp_path: Path) -> None:
    files = sharded_model({"model_type": "llama"}, [100, 200])
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    assert refusal(tmp_path) == "org/tiny: model-00002-of-00002.safetensors is missing"
    index = {"weight_map": {"a": "../outside.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert (
        refusal(tmp_path)
        == "org/tiny: model.safetensors.index.json names an unsafe weight file '../outside.safetensors'"
    )


def test_supported_types_come_from_mlx_lm_without_importing_it() -> None:
    types = supported_model_types()
    assert {"llama", "mistral", "qwen2", "gemma3_text"} <= types
    assert not {"cache", "base", "rope_utils", "switch_layers"} & types
    code = "import sys, mlxd.hub; mlxd.hub.supported_model_types(); print(sorted(m for m in sys.modules if m.split('.')[0] in {'mlx', 'mlx_lm', 'huggingface_hub'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_file_selection_keeps_only_what_mlx_loads() -> None:
    listed = [
        RemoteFile("README.md", 10),
        RemoteFile("model-00002-of-00002.safetensors", 500),
        RemoteFile("model-00001-of-00002.safetensors", 400),
        RemoteFile("tokenizer.json", 50),
        RemoteFile("config.json", 90),
        RemoteFile("pytorch_model.bin", 900),
        RemoteFile("consolidated.safetensors", 900),
        RemoteFile("sub/config.json", 1),
        RemoteFile("chat_template.jinja", 5),
    ]
    assert [f.path for f in select_files("org/x", listed)] == [
        "config.json",
        "chat_template.jinja",
        "tokenizer.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]


def test_file_selection_takes_an_encoder_embedders_files() -> None:
    listed = [
        RemoteFile("config.json", 9),
        RemoteFile("model.safetensors", 500),
        RemoteFile("vocab.txt", 30),
        RemoteFile("modules.json", 3),
        RemoteFile("1_Pooling/config.json", 2),
        RemoteFile("onnx/model.onnx", 400),
    ]
    assert sorted(f.path for f in select_files("org/bge", listed)) == [
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        "modules.json",
        "vocab.txt",
    ]


@pytest.mark.parametrize(
    ("listed", "message"),
    [
        (["config.json", "model.safetensors", "sub/modeling.py"], "org/x ships code (sub/modeling.py)"),
        (["model.safetensors"], "org/x is not an MLX model: it has no config.json"),
        (["config.json", "model.gguf"], "org/x is not an MLX model: no model*.safetensors weights"),
    ],
)
def test_file_selection_refusals(listed: list[str], message: str) -> None:
    with pytest.raises(HubError) as info:
        select_files("org/x", [RemoteFile(p, 1) for p in listed])
    assert info.value.message.startswith(message)


def _http_error(status: int, error_code: str | None = None) -> Exception:
    from httpx2 import Request, Response
    from huggingface_hub import hf_raise_for_status

    headers = {"X-Error-Code": error_code} if error_code else {}
    response = Response(
        status, headers=headers, request=Request("GET", "http://hub.invalid/api/models/org/x")
    )
    try:
        hf_raise_for_status(response)
    except Exception as exc:
        return exc
    raise AssertionError("no error raised")


@pytest.mark.parametrize(
    ("make", "code", "hint_has"),
    [
        (lambda: _http_error(401, "GatedRepo"), "gated", "HF_TOKEN"),
        (lambda: _http_error(401, "RepoNotFound"), "repo_not_found", "HF_TOKEN"),
        (lambda: _http_error(404, "RevisionNotFound"), "revision_not_found", "--revision"),
        (lambda: _http_error(403), "unauthorized", "HF_TOKEN"),
        (lambda: _http_error(429), "rate_limited", "retry"),
        (lambda: OSError(errno.ENOSPC, "No space left on device"), "disk_full", "HF_HUB_CACHE"),
    ],
)
def test_hub_errors_map_to_one_line_with_a_hint(make: object, code: str, hint_has: str) -> None:
    error = translate(make(), "org/x", "main", "http://hub.invalid")  # type: ignore[operator]
    assert error is not None
    assert error.code == code
    assert "\n" not in error.message
    assert hint_has in (error.hint or "")


def test_network_errors_and_unknown_errors() -> None:
    from httpx2 import ConnectError, ReadTimeout

    refused = translate(ConnectError("[Errno 111] Connection refused"), "org/x", "main", "http://hub.invalid")
    slow = translate(ReadTimeout("slow"), "org/x", "main", "http://hub.invalid")
    assert (
        getattr(refused, "message", None) == "cannot reach the Hub at http://hub.invalid (connection refused)"
    )
    assert getattr(slow, "message", None) == "cannot reach the Hub at http://hub.invalid (timed out)"
    unknown_host = translate(
        ConnectError("[Errno -2] Name or service not known"), "org/x", "main", "http://h"
    )
    assert (
        getattr(unknown_host, "message", None)
        == "cannot reach the Hub at http://h (name or service not known)"
    )
    assert translate(ValueError("bug"), "org/x", "main", "http://hub.invalid") is None


def _fake_cache(cache: Path, repo: str, commit: str) -> Path:
    storage = cache / ("models--" + repo.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir()
    (storage / "blobs" / "abc").write_text("{}")
    (snapshot / "config.json").symlink_to(Path("../../blobs/abc"))
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    return snapshot


def test_resolve_cached_model(tmp_path: Path) -> None:
    snapshot = _fake_cache(tmp_path, "org/x", "a" * 40)
    assert resolve_cached_model("org/x", None, cache_dir=tmp_path) == snapshot
    assert resolve_cached_model("org/x", "a" * 40, cache_dir=tmp_path) == snapshot
    with pytest.raises(HubError) as info:
        resolve_cached_model("org/y", "v2", alias="tiny", cache_dir=tmp_path)
    assert (info.value.message, info.value.hint) == (
        "org/y at v2 is not downloaded",
        "run `mlxd models pull tiny`",
    )
    with pytest.raises(HubError):
        resolve_cached_model("../../etc", None, cache_dir=tmp_path)


def test_removal_never_leaves_the_cache(tmp_path: Path) -> None:
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    _fake_cache(cache, "org/x", "b" * 40)
    storage = cache / "models--org--x"
    newer = storage / "snapshots" / ("c" * 40)
    newer.mkdir()
    (storage / "blobs" / "def").write_text("{}")
    (newer / "config.json").symlink_to(Path("../../blobs/def"))
    outside.mkdir()
    for blob in ("abc", "def"):
        (storage / "blobs" / blob).rename(outside / blob)
    (storage / "blobs").rmdir()
    (storage / "blobs").symlink_to(outside)  # the blobs dir now leads outside the cache

    with pytest.raises(HubError) as info:
        plan_removal("org/x", "b" * 40, cache_dir=cache)
    assert info.value.message == "refusing to delete a path outside the HF cache"
    assert (outside / "abc").exists()

    # Removing the whole repo deletes the symlink, never what it points to.
    plan_removal("org/x", cache_dir=cache).execute()
    assert not storage.exists()
    assert sorted(p.name for p in outside.iterdir()) == ["abc", "def"]


def test_env_is_read_like_huggingface_hub(tmp_path: Path) -> None:
    env = HubEnv.from_environ(
        {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://x:1/", "HF_HUB_OFFLINE": "1"}
    )
    assert env == HubEnv("http://x:1", tmp_path / "hf" / "hub", True)
    env = HubEnv.from_environ({"XDG_CACHE_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "c")})
    assert (env.cache_dir, env.offline, env.endpoint) == (tmp_path / "c", False, "https://huggingface.co")
    assert (
        HubEnv.from_environ({"XDG_CACHE_HOME": str(tmp_path)}).cache_dir == tmp_path / "huggingface" / "hub"
    )


def test_plain_progress_lines_and_summary() -> None:
    out = io.StringIO()
    reporter = PlainReporter(out, interval=0)
    reporter.planned("org/x", "c" * 40, complete=3, partial=1, total_bytes=3_000_000, present_bytes=1_000_000)
    reporter.started("model.safetensors", 3_000_000, 1_000_000)
    reporter.advance(500_000)
    reporter.finished("model.safetensors")
    assert out.getvalue().splitlines() == [
        "pulling org/x at commit cccccccccccc: 2.0 MB to download",
        "  model.safetensors (3.0 MB, resuming at 1.0 MB)",
        "  model.safetensors: 50% of 3.0 MB",
        "  model.safetensors: done",
    ]
    result = PullResult(
        "org/x", "main", "c" * 40, Path(os.devnull), (), complete=3, resumed=1, reused_bytes=1_000_000
    )
    assert result.summary() == "3 files already complete, 1 resumed (1.0 MB reused)"
