"""A recording stand-in for launchctl / systemctl / journalctl.

launchd does not exist on Linux and systemd is not PID 1 on the machines the tests run
on, so test doubles stand in for their tools (this one, and ``launchd_shim.py``, which
also runs the job). It appends
its argv (as a JSON list) to ``$MLXD_SHIM_LOG`` and answers from the scenario in
``$MLXD_SHIM_SCENARIO``: a JSON list of rules ``{"args": [...prefix], "exit": N,
"stdout": "...", "stderr": "...", "times": N}``. The first rule whose ``args`` prefixes
the call and whose ``times`` is not used up answers; no matching rule means exit 0.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(args: list[str]) -> int:
    log = Path(os.environ["MLXD_SHIM_LOG"])
    with log.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(args) + "\n")
    scenario = Path(os.environ.get("MLXD_SHIM_SCENARIO", ""))
    rules = json.loads(scenario.read_text()) if scenario.is_file() else []
    used_path = log.with_name(log.name + ".used.json")
    used = json.loads(used_path.read_text()) if used_path.is_file() else {}
    for index, rule in enumerate(rules):
        prefix = rule["args"]
        if args[: len(prefix)] != prefix:
            continue
        count = used.get(str(index), 0)
        if rule.get("times") is not None and count >= rule["times"]:
            continue
        used[str(index)] = count + 1
        used_path.write_text(json.dumps(used))
        sys.stdout.write(rule.get("stdout", ""))
        sys.stderr.write(rule.get("stderr", ""))
        return int(rule.get("exit", 0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
