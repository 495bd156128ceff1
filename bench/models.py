"""The models a run measures, and the adapters and second models some scenarios need.

Everything is built locally by ``mlxd.runtime.demo_model`` (random weights, a real
tokenizer, the same chat template for every size), in a subprocess so the harness never
imports MLX. The tiny model is the magnifying glass for per-token server overhead; the
small one shows where the engine's own cost dominates.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_BUILD = """\
import pathlib, sys
from mlxd.runtime import demo_model
getattr(demo_model, sys.argv[1])(pathlib.Path(sys.argv[2]), seed=int(sys.argv[3]))
"""
_ADAPTER = """\
import pathlib, sys
from mlxd.runtime.demo_model import build_lora_adapter
build_lora_adapter(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
"""


@dataclass(frozen=True)
class BenchModel:
    """A model size: its name in reports and on the command line, and how to build it."""

    name: str
    builder: str
    description: str
    #: A model directory made beforehand (``--model-dir``): used as it is, never built.
    path: Path | None = None

    def build(self, dest: Path, seed: int = 0) -> Path:
        """Write the model (random weights from ``seed``) to ``dest``; return where it is."""
        if self.path is not None:
            return self.path
        subprocess.run([sys.executable, "-c", _BUILD, self.builder, str(dest), str(seed)], check=True)
        return dest

    @classmethod
    def from_dir(cls, path: Path) -> BenchModel:
        """A model directory given on the command line, named after its folder."""
        path = path.expanduser().resolve()
        if not (path / "config.json").is_file():
            raise ValueError(f"{path.name} has no config.json: not a model directory")
        return cls(path.name, "", f"`{path.name}`: a model directory given with `--model-dir`.", path)


TINY = BenchModel(
    "tiny",
    "build_tiny_model",
    "`build_tiny_model(seed=0)`: 2 layers, hidden 64, vocab 768, context 2,048, ~0.1M "
    "parameters. Its engine cost is tiny, so server overhead shows directly.",
)
SMALL = BenchModel(
    "small",
    "build_small_model",
    "`build_small_model(seed=0)`: 12 layers, hidden 768, 12 heads (4 KV), vocab 768, context "
    "4,096, ~76M parameters in float32. The engine dominates: where MLX runs on the CPU it "
    "decodes and prefills only a few tokens per second, so it gets fewer, shorter requests.",
)
MODELS: tuple[BenchModel, ...] = (TINY, SMALL)
BY_NAME = {model.name: model for model in MODELS}


def build_adapter(base: Path, dest: Path) -> Path:
    """A LoRA adapter for the model at ``base`` (``build_lora_adapter``'s defaults); return ``dest``."""
    subprocess.run([sys.executable, "-c", _ADAPTER, str(base), str(dest)], check=True)
    return dest
