"""`agentstack index ...` end to end with the real embedder: JSON output and exit codes 0/1/2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentstack.cli import index as _index_commands
from agentstack.cli.app import app

pytestmark = pytest.mark.integration


def run(*args: str) -> tuple[int, object]:
    result = CliRunner().invoke(app, ["index", *args])
    out = result.stdout
    try:
        return result.exit_code, json.loads(out)
    except ValueError:
        return result.exit_code, out + result.stderr


def test_cli_commands_and_exit_codes(tmp_path: Path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "tea.md").write_text("# Tea\n\nGreen tea is steamed; black tea is oxidised before drying.\n")
    (corpus / "coffee.md").write_text("# Coffee\n\nCoffee beans are roasted, ground and brewed.\n")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really")
    spec = tmp_path / "drinks.yaml"
    spec.write_text(f"description: drinks\nsources: [{corpus}]\npii: {{enabled: false}}\n")

    code, out = run("create", "drinks", "--spec", str(spec), "--json")
    assert code == 1 and len(out["added"]) == 2  # partial: one file failed, and it is listed
    assert out["failed"] == [{"source": str(corpus / "broken.pdf"), "code": "corrupt_pdf",
                              "reason": out["failed"][0]["reason"]}]
    (corpus / "broken.pdf").unlink()
    code, out = run("add", "drinks", "--json")
    assert code == 0 and len(out["unchanged"]) == 2 and not out["added"]
    (corpus / "juice.md").write_text("# Juice\n\nOrange juice is squeezed from fresh oranges.\n")
    assert run("add", "drinks", "--json")[1]["added"]
    (corpus / "juice.md").unlink()
    code, out = run("add", "drinks", "--json")  # a vanished file stays without --prune
    assert code == 0 and not out["deleted"] and len(out["unchanged"]) == 2
    code, out = run("add", "drinks", "--prune", "--json")
    assert code == 0 and len(out["deleted"]) == 1 and len(out["unchanged"]) == 2

    code, out = run("search", "drinks", "how is coffee made", "--k", "1", "--mode", "dense", "--json")
    assert code == 0 and out["hits"][0]["title"] == "Coffee"
    code, out = run("search", "drinks", "tea", "--filter", "format=markdown", "--json")
    assert code == 0 and out["hits"]
    code, text = run("search", "drinks", "oxidised tea")  # human output
    assert code == 0 and "Tea" in text

    code, out = run("list", "--json")
    assert code == 0 and out[0]["name"] == "drinks" and out[0]["description"] == "drinks"
    code, out = run("show", "drinks", "--json")
    assert code == 0 and out["manifest"]["embedder"]["dim"] == 384
    code, out = run("docs", "drinks", "--json")
    assert code == 0 and out["total"] == 2
    tea = next(d["doc_id"] for d in out["documents"] if d["title"] == "Tea")
    code, out = run("stats", "drinks", "--json")
    assert code == 0 and out["chunks"] == 2 and out["vectors"]["kind"] == "flat"
    code, out = run("delete", "drinks", tea, "--json")
    assert code == 0 and out["deleted"] == [tea]
    code, out = run("rebuild", "drinks", "--json")
    assert code == 0 and len(out["updated"]) == 1
    code, out = run("verify", "drinks", "--json")
    assert code == 0 and out["ok"] and out["checked"]["chunks"] == 1

    assert run("search", "nope", "x")[0] == 2  # unknown index
    code, out = run("search", "drinks", "x", "--mode", "fuzzy", "--json")
    assert code == 2 and out["error"]["code"] == "invalid_request"
    assert run("search", "drinks", "", "--json")[0] == 2  # empty query
    assert run("search")[0] == 2  # missing arguments (typer usage error)
    assert run("create", "bad/name", "--json")[0] == 2
    assert run("create", "drinks", "--json")[0] == 1  # exists: a conflict, not a usage error
