"""`agentstack models quantize`: a requantised file llama.cpp serves, with the gate's quality checks
run against the shipped weights and recorded beside the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alignment"


def test_quantize_q8_0_runs_the_quality_checks(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from agentstack.cli.app import app
    from agentstack.cli import commands  # noqa: F401  (registers the command groups)

    monkeypatch.setenv("AGENTSTACK_ALIGNMENT__GATE__ADVBENCH_PATH", str(FIXTURES / "advbench"))
    monkeypatch.setenv("AGENTSTACK_ALIGNMENT__GATE__XSTEST_PATH", str(FIXTURES / "xstest"))
    out = tmp_path / "smol.Q8_0.gguf"
    result = CliRunner().invoke(app, ["models", "quantize", "Q8_0", "--out", str(out), "--limit", "3", "--json"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.output[result.output.index("{"):])
    checks = {c["name"]: c for c in report["quality"]["checks"]}
    assert set(checks) == {"kl", "agreement", "refusal", "compliance"}
    assert checks["kl"]["n"] == 3 and 0 <= checks["kl"]["value"] < 0.15  # 8-bit over 4-bit weights: near lossless
    assert checks["refusal"]["n"] == 3 and checks["compliance"]["n"] == 3
    assert result.exit_code == (0 if report["quality"]["passed"] else 1)
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["format"] == "Q8_0" and sidecar["quality"] == report["quality"]
    assert sidecar["tensor_types"]["Q8_0"] > 200
