"""API fuzzing at bench size: Schemathesis over every operation of /openapi.json (tests/fuzz/api.py).

Same server, keys, caps and checks as the CI test (tests/integration/test_api_fuzz.py), with more
examples per operation. Prints a table per key and writes bench/results/api_fuzz/report.json
(with Schemathesis's NDJSON and JUnit reports beside it).

    .venv/bin/python bench/api_fuzz.py [--max-examples 50] [--seed 0]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if __name__ == "__main__":
    from tests.fuzz import api

    if "--max-examples" not in sys.argv:
        sys.argv += ["--max-examples", "50"]
    api.main()
