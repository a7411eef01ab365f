"""``python -m bench.fake_modal_server MAX_CONTAINERS``: the test suite's fake Modal server
(tests/fake_modal) in a process of its own, so that it does not take turns with the
orchestrator in one interpreter. Prints the environment that points modal's client at it
(one JSON line), serves until its stdin closes, then prints what it saw (one JSON line)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_modal import FakeModal


def main(argv: list[str]) -> None:
    with FakeModal(max_containers=int(argv[1])) as server:
        environ = {**server.environ(), "MODAL_CONFIG_PATH": str(server.root / "no-modal.toml")}
        sys.stdout.write(json.dumps(environ) + "\n")
        sys.stdout.flush()
        sys.stdin.read()
        names: dict[str, int] = {}
        for rpc in server.rpcs:
            names[rpc.name] = names.get(rpc.name, 0) + 1
        seen = {"invalid": len(server.invalid), "errors": len(server.errors), "rpcs": names}
    sys.stdout.write(json.dumps(seen) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv)
