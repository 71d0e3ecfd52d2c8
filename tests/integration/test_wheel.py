"""The built wheel carries the default policies, the demo index spec, the docs it indexes and the web
pages, and finds them without the source checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_wheel_resources_resolve_without_the_checkout(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("agentstack-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("agentstack/_bundled/policies/pii.yaml", "agentstack/_bundled/policies/tools.yaml",
                     "agentstack/_bundled/policies/guards.yaml", "agentstack/_bundled/indexes/demo.yaml",
                     "agentstack/_bundled/docs/architecture.md", "server/app.py",
                     "agentstack/storage/migrations/env.py",
                     "agentstack/storage/migrations/versions/0001_baseline.py"):
        assert required in names, required
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = ("import agentstack, agentstack.resources as r\n"
             "from agentstack.orchestrators.tools import load_tool_policy\n"
             "from agentstack.orchestrators.common import load_guard_policy\n"
             "from agentstack.ingest.pii import load_policy\n"
             "from agentstack.index.spec import find_spec\n"
             "assert agentstack.__file__.startswith(%r), agentstack.__file__\n"
             "assert '_bundled' in str(r.shipped_dir('policies'))\n"
             "load_tool_policy(); load_guard_policy(); load_policy()\n"
             "spec = find_spec('demo', None)\n"
             "assert spec is not None and '_bundled' in str(spec)\n"
             "from agentstack.config import load_settings\n"
             "from agentstack.db import open_db\n"
             "from agentstack.storage import migrate\n"
             "db = open_db(load_settings(data_dir='data'))\n"
             "assert migrate.current(db) == migrate.head() == '0003_responses_grounding', migrate.current(db)\n"
             "print('ok')\n") % str(unpacked)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
