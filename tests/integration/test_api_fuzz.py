"""Schemathesis over every operation of /openapi.json, on a real server with keys (tests/fuzz/api.py).

A bounded run (a few examples per operation, every check, every phase), once with the operator key
and once with the app key. Zero failures is the contract: a failure is fixed in the API or in its
schema, never by turning the check off. bench/api_fuzz.py runs the same with more examples.
"""

from __future__ import annotations

import os

import pytest

from tests.fuzz import api

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_schemathesis_finds_no_failure_with_either_key(tmp_path):
    if not api.SCHEMATHESIS.exists():
        if os.environ.get("CI"):
            pytest.fail(f"schemathesis is missing at {api.SCHEMATHESIS}: `make test` installs it (make fuzz-tools)")
        pytest.skip("schemathesis is not installed: run `make fuzz-tools`")
    report = api.fuzz(tmp_path / "fuzz", max_examples=4)
    summary = api.summary(report)
    assert [r["label"] for r in report["runs"]] == ["operator", "app"], summary
    for run in report["runs"]:
        assert run["operations"] >= 45, summary  # every operation in /openapi.json was exercised
        assert run["cases"] > 500, summary
        assert not run["errors"], summary
        assert not run["failures"], summary
