"""Child process for the killed-promotion test (run as a script, not collected by pytest).

    python alignment_server_child.py DATA_DIR PORT FAULT

Serves agentstack (embedded SmolLM2, the test keys) on 127.0.0.1:PORT with DATA_DIR as its data
directory. FAULT ``none`` serves normally; ``promote.loaded`` or ``promote.activated`` kills the
process with SIGKILL the moment a promotion reaches that point (see agentstack/alignment/faults.py),
exactly as an outside ``kill -9`` there would: no cleanup, no ``finally``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def main() -> None:
    data_dir, port, fault = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sys.path.insert(0, str(Path(__file__).parents[2]))
    import uvicorn

    from agentstack.alignment import faults
    from server.app import create_app
    from tests.conftest import make_settings

    if fault != "none":
        def hook(name: str) -> None:
            if name == fault:
                os.kill(os.getpid(), signal.SIGKILL)

        faults.set_hook(hook)
    settings = make_settings(Path(data_dir), server={"port": port})
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
