"""Planning the ranks' hosts from ``[distributed]``: what is checked before anything starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlxd.cluster.hosts import LOCAL, check_reachable, is_this_machine, plan_cluster
from mlxd.cluster.launcher import launch_command
from mlxd.config.distributed import DistributedConfig
from mlxd.errors import ConfigError
from tests.cli.conftest import isolated_env
from tests.conftest import free_port


def section(**values: object) -> DistributedConfig:
    config = DistributedConfig.model_validate(values)
    config.bind(Path.cwd())
    return config


def own_address() -> str | None:
    """A non-loopback address of this machine, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("198.51.100.1", 9))
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if address.startswith("127.") else address


def test_ranks_on_this_machine_are_spawned_without_ssh() -> None:
    plan = plan_cluster(section(hosts=["127.0.0.1", "localhost", "127.0.0.1"]))
    assert plan.size == 3
    assert plan.backend == "ring"  # "any" without a hostfile
    assert plan.names == ("127.0.0.1", "localhost", "127.0.0.1")
    assert all(host.local and host.ssh == LOCAL for host in plan.hosts)
    assert [host.ips for host in plan.hosts] == [("127.0.0.1",)] * 3
    assert plan.control_address == "127.0.0.1"
    written = plan.hostfile()
    assert written["backend"] == "ring"
    assert [h["ssh"] for h in written["hosts"]] == [LOCAL] * 3


def test_a_hostfile_from_mlx_distributed_config_is_read(tmp_path: Path) -> None:
    address = own_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(
        json.dumps(
            {
                "backend": "jaccl",
                "envs": ["MLX_METAL_FAST_SYNCH=1"],
                "hosts": [
                    {"ssh": "this-mac", "ips": [address], "rdma": [None, "rdma_en3"]},
                    {"ssh": "other-mac", "ips": ["198.51.100.7"], "rdma": ["rdma_en3", None]},
                ],
            }
        )
    )
    config = section(hostfile="hosts.json")
    config.bind(tmp_path)
    plan = plan_cluster(config)
    assert plan.backend == "jaccl"
    assert plan.envs == ("MLX_METAL_FAST_SYNCH=1",)
    first, second = plan.hosts
    assert (first.local, first.ssh, first.ips) == (True, LOCAL, (address,))  # spawned here, reached there
    assert (second.local, second.ssh, second.rdma) == (False, "other-mac", ("rdma_en3", None))
    command = launch_command(plan, tmp_path / "h.json", 40000, "{}", ["serve", "--config", "x.toml"])
    assert command[command.index("--backend") + 1] == "jaccl"
    assert command[command.index("--starting-port") + 1] == "40000"
    assert command[command.index("--") + 1 :] == ["-m", "mlxd", "serve", "--config", "x.toml"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"hosts": ["198.51.100.7", "127.0.0.1"]}, r"rank 0 \(198\.51\.100\.7\) must be this machine"),
        ({"hosts": ["127.0.0.1", "198.51.100.7"]}, "which the other machines cannot reach"),
        ({"hosts": ["127.0.0.1", "127.0.0.1"], "backend": "jaccl"}, "needs a hostfile"),
        ({"hosts": ["127.0.0.1", "no-such-host.invalid"]}, "cannot resolve no-such-host.invalid"),
    ],
)
def test_hosts_that_cannot_work_are_config_errors(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_cluster(section(**values))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"hosts": ["127.0.0.1"]}, "at least two hosts"),
        ({"hosts": []}, "at least two hosts"),
        ({"hosts": ["127.0.0.1", "a"], "hostfile": "h.json"}, "not both"),
        ({"hosts": ["127.0.0.1", "a b"]}, "not a host name"),
        ({"hosts": ["127.0.0.1", "$(reboot)"]}, "not a host name"),
        ({"hosts": ["127.0.0.1", "127.0.0.1"], "backend": "gloo"}, "backend"),
        ({"hosts": ["127.0.0.1", "127.0.0.1"], "heartbeat_timeout": "0.1s"}, "heartbeat_timeout"),
    ],
)
def test_the_section_is_validated(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistributedConfig.model_validate(values)


def test_this_machine_is_recognised_by_its_addresses() -> None:
    assert is_this_machine("127.0.0.1")
    assert is_this_machine("localhost")
    assert not is_this_machine("198.51.100.7")
    assert not is_this_machine("no-such-host.invalid")
    if (address := own_address()) is not None:
        assert is_this_machine(address)


def test_only_remote_hosts_are_probed() -> None:
    check_reachable(plan_cluster(section(hosts=["127.0.0.1", "127.0.0.1"])))  # nothing to ssh to


def test_a_daemon_with_an_unreachable_host_fails_to_start_with_a_clear_error(tmp_path: Path) -> None:
    """``mlxd serve`` checks every other host over ssh first: one line, in seconds, no hang."""
    address = own_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    config = tmp_path / "mlxd.toml"
    config.write_text(
        f'[server]\nport = {free_port()}\n[distributed]\nhosts = ["{address}", "198.51.100.7"]\n'
    )
    env = {**os.environ, **isolated_env(tmp_path)}
    env.pop("MLXD_CONFIG", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mlxd", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    first, *rest = done.stderr.strip().splitlines()
    assert first.startswith("error: cannot reach 198.51.100.7 over ssh")
    assert rest
    assert "key-based ssh" in rest[0]  # the hint: what to do
