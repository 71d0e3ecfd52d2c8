"""Schemathesis over every operation of ``/openapi.json``, against a real server.

The server is the real thing: ``python -m agentstack.cli serve`` in a child process, with the real
SmolLM2 engine and embedder, API keys configured (an operator key and an app key), and its own
data directory, so whatever the fuzzer does (uploads, deletes, alignment jobs that spawn a
trainer) touches nothing else. What fuzzing could make expensive is capped in the server's
settings, and the caps are published in its schema (``server/openapi.py``), so every valid request
stays cheap: ``engine.max_tokens_limit`` / ``default_max_tokens`` (a few tokens), ``engine.max_n``,
``orchestration.react_step_tokens``, ReAct's ``max_steps`` (2, in a copy of the shipped policies);
constitution jobs get an empty red-team folder, so they fail fast. One small index (``fuzz``) exists
before the run so that ``rag:fuzz`` and the index routes have something to read.

Schemathesis 4 runs from its own virtual environment (``make fuzz-tools`` creates it under
``~/.cache/agentstack/venvs``), once with each key, with every check enabled (``--checks all``:
server errors, status code, content type, headers and response schema conformance, positive and
negative data, missing headers, unsupported methods, use after free, resource availability,
ignored auth, response time) and all four phases (examples, coverage, fuzzing, stateful). At teardown every
alignment job still queued or running is cancelled and awaited.

    python -m tests.fuzz.api --max-examples 20 --out bench/results/api_fuzz

Used by tests/integration/test_api_fuzz.py (CI, a bounded run) and bench/api_fuzz.py (more).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import platformdirs

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(platformdirs.user_cache_dir("agentstack")) / "venvs" / "schemathesis-4"
SCHEMATHESIS = VENV / "bin" / "schemathesis"
OPERATOR_KEY = "fuzz-operator-key-0123456789"
APP_KEY = "fuzz-app-key-0123456789abcd"
KEYS = [{"id": "fuzz-op", "role": "operator", "key": OPERATOR_KEY},
        {"id": "fuzz-app", "role": "app", "key": APP_KEY}]
# What fuzzing could make expensive, capped (and published in /openapi.json by server/openapi.py).
CAPS = {"AGENTSTACK_ENGINE__MAX_TOKENS_LIMIT": "8", "AGENTSTACK_ENGINE__DEFAULT_MAX_TOKENS": "4",
        "AGENTSTACK_ENGINE__MAX_N": "2", "AGENTSTACK_ORCHESTRATION__REACT_STEP_TOKENS": "16",
        "AGENTSTACK_ORCHESTRATION__REWRITE_QUERIES": "false",
        # The ignored-auth check sends wrong keys on purpose; the lockout after 20 a minute (tested on its
        # own in tests/integration/test_auth_matrix.py) would otherwise answer everything after with 429.
        "AGENTSTACK_AUTH__MAX_FAILED_PER_MINUTE": "1000000"}
DOCS = [("fuzzing.md", "# Fuzzing\n\nSchemathesis generates requests from the OpenAPI schema and checks the answers."),
        ("keys.md", "# Keys\n\nOperators manage indexes and alignment jobs; apps chat and send feedback.")]
CONFIG = """\
# written by tests/fuzz/api.py
[auth.openapi.bearer]
bearer = "${AGENTSTACK_FUZZ_KEY}"

# The one rule of the API that JSON Schema cannot state: with `messages`, the last message must be
# the user's (JSON Schema has no "last item"). A schema-valid /v1/chat body may therefore get a 400
# that names it; the exception is this operation and this status only, every check stays on.
[[operations]]
include-path = "/v1/chat"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
"""


@dataclass
class RunResult:
    label: str
    returncode: int
    seconds: float
    operations: int = 0
    cases: int = 0
    failures: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    log: str = ""

    def as_dict(self) -> dict:
        return {"label": self.label, "returncode": self.returncode, "seconds": round(self.seconds, 1),
                "operations": self.operations, "cases": self.cases, "failures": self.failures,
                "errors": self.errors}


def require_schemathesis() -> Path:
    if not SCHEMATHESIS.exists():
        raise FileNotFoundError(f"schemathesis is not installed at {SCHEMATHESIS}; run `make fuzz-tools`")
    return SCHEMATHESIS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTACK_")}
    env.update(CAPS)
    # Constitution jobs would generate over the red-team set: point it at an empty folder, so that a
    # fuzzed job fails fast for lack of prompts instead of generating for minutes.
    empty = data_dir / "no-redteam-set"
    empty.mkdir(parents=True, exist_ok=True)
    env["AGENTSTACK_ALIGNMENT__GATE__ADVBENCH_PATH"] = str(empty)
    env["AGENTSTACK_POLICIES_DIR"] = str(_policies(data_dir))
    env.update({"AGENTSTACK_DATA_DIR": str(data_dir), "AGENTSTACK_AUTH__KEYS": json.dumps(KEYS),
                "AGENTSTACK_SERVER__PORT": str(port), "AGENTSTACK_SERVER__BUILD_DEMO_INDEX": "false",
                "AGENTSTACK_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    if os.environ.get("AGENTSTACK_MODEL_CACHE"):
        env["AGENTSTACK_MODEL_CACHE"] = os.environ["AGENTSTACK_MODEL_CACHE"]
    return env


def _policies(data_dir: Path) -> Path:
    """The shipped policies, with ReAct held to 2 steps (each step is a generation)."""
    import re
    import shutil

    folder = data_dir / "policies"
    if not folder.exists():
        shutil.copytree(ROOT / "policies", folder)
        tools = folder / "tools.yaml"
        tools.write_text(re.sub(r"(?m)^max_steps:\s*\d+", "max_steps: 2", tools.read_text()))
    return folder


def seed_index(data_dir: Path) -> None:
    """The ``fuzz`` index, built before the server starts (there is no HTTP route that creates one)."""
    from agentstack.config import load_settings
    from agentstack.index.manager import IndexManager
    from agentstack.index.spec import IndexSpec

    manager = IndexManager(load_settings(data_dir=data_dir))
    manager.create("fuzz", spec=IndexSpec.model_validate({"pii": {"enabled": False}}))
    manager.add_bytes("fuzz", [(name, text.encode()) for name, text in DOCS])


def _die_with_parent() -> None:
    """In the server child: get SIGTERM when the harness dies, however it dies (Linux)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@contextmanager
def live_server(data_dir: Path, log_path: Path, timeout_s: float = 300) -> Iterator[str]:
    port = free_port()
    env = _server_env(data_dir, port)
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agentstack.cli", "serve", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=data_dir, preexec_fn=_die_with_parent)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {proc.returncode}; see {log_path}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start within {timeout_s} s; see {log_path}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cancel_jobs(url: str, timeout_s: float = 120) -> list[str]:
    """Cancel every queued or running alignment job and wait until none is left running."""
    headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    cancelled: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.get(f"{url}/v1/admin/alignment/jobs", params={"limit": 500}, headers=headers, timeout=30)
        r.raise_for_status()
        jobs = r.json()["data"]
        live = [j for j in jobs if j["status"] in ("queued", "running")]
        if not live:
            return cancelled
        for job in live:
            if job["id"] not in cancelled:
                httpx.post(f"{url}/v1/admin/alignment/jobs/{job['id']}/cancel", headers=headers, timeout=60)
                cancelled.append(job["id"])
        if time.monotonic() > deadline:
            raise RuntimeError(f"alignment jobs still running after cancel: {[j['id'] for j in live]}")
        time.sleep(1)


def run_schemathesis(url: str, key: str, label: str, out: Path, *, max_examples: int, phases: str, seed: int,
                     max_time: float | None = None, workers: int = 1) -> RunResult:
    exe = require_schemathesis()
    out.mkdir(parents=True, exist_ok=True)
    config = out / "schemathesis.toml"
    config.write_text(CONFIG)
    ndjson = out / f"{label}.ndjson"
    cmd = [str(exe), "--config-file", str(config), "--no-color", "run", f"{url}/openapi.json",
           "--checks", "all", "--phases", phases, "--max-examples", str(max_examples), "--seed", str(seed),
           "--workers", str(workers), "--request-timeout", "120", "--generation-database", "none",
           "--report", "ndjson,junit", "--report-ndjson-path", str(ndjson),
           "--report-junit-path", str(out / f"{label}.junit.xml"), "--max-failures", "200",
           # the response-time check stays on, with the server's own bound instead of 10 s: on a shared
           # CPU a 4-token answer can wait behind a batch
           "--max-response-time", "120"]
    if max_time:
        cmd += ["--max-time", str(int(max_time))]
    env = {**os.environ, "AGENTSTACK_FUZZ_KEY": key}
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out)
    result = RunResult(label, proc.returncode, time.perf_counter() - started, log=proc.stdout + proc.stderr)
    (out / f"{label}.log").write_text(result.log)
    _read_ndjson(ndjson, result)
    return result


def _read_ndjson(path: Path, result: RunResult) -> None:
    """Failures and counts from Schemathesis's event stream (one JSON object per line)."""
    if not path.exists():
        result.errors.append(f"no report at {path}")
        return
    operations: set[str] = set()
    for line in path.read_text().splitlines():
        event = json.loads(line)
        for kind, body in event.items():
            if kind == "ScenarioFinished":
                recorder = body.get("recorder") or {}
                label = recorder.get("label")
                if label:
                    operations.add(label)
                result.cases += len(recorder.get("cases") or {})
                for case_id, checks in (recorder.get("checks") or {}).items():
                    for check in checks:
                        if str(check.get("status", "")).lower() == "failure":
                            failure = check.get("failure_info") or {}
                            result.failures.append({"operation": label, "check": check.get("name"),
                                                    "title": (failure.get("failure") or {}).get("title"),
                                                    "message": (failure.get("failure") or {}).get("message"),
                                                    "code": failure.get("code")})
            elif kind == "NonFatalError":
                result.errors.append(str(body.get("info") or body)[:2000])
            elif kind == "FatalError":
                result.errors.append(str(body.get("exception") or body)[:2000])
    result.operations = len(operations)


def fuzz(out: Path, *, max_examples: int, phases: str = "examples,coverage,fuzzing,stateful", seed: int = 0,
         max_time: float | None = None, keys: tuple[str, ...] = ("operator", "app")) -> dict:
    """Start the server, run Schemathesis with each key, cancel the jobs it started; the report."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"max_examples": max_examples, "phases": phases, "seed": seed, "caps": CAPS,
                    "loadavg_at_start": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="agentstack-fuzz-") as tmp:
        data_dir = Path(tmp) / "data"
        seed_index(data_dir)
        with live_server(data_dir, out / "server.log") as url:
            for label in keys:
                key = OPERATOR_KEY if label == "operator" else APP_KEY
                result = run_schemathesis(url, key, label, out, max_examples=max_examples, phases=phases, seed=seed,
                                          max_time=max_time)
                report["runs"].append(result.as_dict())
            report["cancelled_jobs"] = cancel_jobs(url)
    report["loadavg_at_end"] = os.getloadavg()
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def summary(report: dict) -> str:
    lines = [f"{'key':10} {'ops':>4} {'cases':>6} {'failures':>8} {'errors':>6} {'seconds':>8}"]
    for run in report["runs"]:
        lines.append(f"{run['label']:10} {run['operations']:>4} {run['cases']:>6} {len(run['failures']):>8} "
                     f"{len(run['errors']):>6} {run['seconds']:>8.1f}")
    for run in report["runs"]:
        for f in run["failures"]:
            lines.append(f"  {run['label']}: {f['operation']} [{f['check']}] {f['title']}")
        for e in run["errors"]:
            lines.append(f"  {run['label']}: error {e[:300]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=20)
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-time", type=float, default=None)
    parser.add_argument("--keys", default="operator,app")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api_fuzz")
    args = parser.parse_args()
    report = fuzz(args.out, max_examples=args.max_examples, phases=args.phases, seed=args.seed,
                  max_time=args.max_time, keys=tuple(args.keys.split(",")))
    print(summary(report))


if __name__ == "__main__":
    main()
