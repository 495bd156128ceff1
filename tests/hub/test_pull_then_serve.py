"""The whole path a user takes: configure an alias, pull it from the Hub, serve it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.hub.helpers import MakeRepo, MlxdEnv

pytestmark = [pytest.mark.hub, pytest.mark.mlx, pytest.mark.server]


def test_pull_then_the_daemon_serves_the_alias(
    mlxd_env: MlxdEnv,
    make_hub_repo: MakeRepo,
    tiny_model_files: dict[str, bytes],
    repo_name: str,
    tmp_path: Path,
) -> None:
    make_hub_repo("org", repo_name, tiny_model_files)
    config = tmp_path / "mlxd.toml"
    config.write_text(f'[models.hubbed]\nmodel = "org/{repo_name}"\n')
    # The CLI finds the daemon through the port in the environment, as the daemon does.
    url = f"http://127.0.0.1:{mlxd_env.env['MLXD_SERVER__PORT']}"
    daemon = mlxd_env.popen("serve", "--config", str(config))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        # Not downloaded yet: an error that says how to get it, and no download attempt.
        with pytest.raises(openai.APIStatusError) as missing:
            client.completions.create(model="hubbed", prompt="x", max_tokens=2)
        assert missing.value.code == "model_not_downloaded"
        assert "run `mlxd models pull hubbed`" in missing.value.message
        assert not mlxd_env.storage(f"org/{repo_name}").joinpath("snapshots").exists()

        pulled = mlxd_env.run("models", "pull", "hubbed", "--config", str(config))
        assert pulled.returncode == 0, pulled.stderr

        reply = client.completions.create(model="hubbed", prompt="hello", max_tokens=4, temperature=0)
        assert reply.usage is not None
        assert reply.usage.completion_tokens == 4
        listed = mlxd_env.run("models", "list", "--json", "--config", str(config))
        rows = {row["alias"]: row for row in json.loads(listed.stdout)}
        assert rows["hubbed"]["downloaded"] is True
        assert rows["hubbed"]["loaded"] is True
    finally:
        daemon.terminate()
        daemon.communicate(timeout=60)
