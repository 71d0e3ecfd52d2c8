"""Self-contained HTML pages for eval reports: tables plus matplotlib plots as base64 PNGs.

One page per run (per-metric distributions, judge score histograms, examples) and one page for two
runs side by side (means with 95% intervals, overlaid distributions, paired differences). No
external assets, scripts or fonts: the file can be mailed or opened offline. All dataset and model
text is HTML-escaped.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch).
This module knows nothing about how the figures were computed.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;
vertical-align:top;font-size:14px}th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.plots img{margin:4px;border:1px solid #eee}.muted{color:#777}.bad{color:#b00}.good{color:#070}
td.text{max-width:420px;white-space:pre-wrap;word-break:break-word}"""

SKIP_PLOTS = {"refused_partial"}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(v, (int, float)) for v in x):
        return f"[{x[0]:.{digits}f}, {x[1]:.{digits}f}]"
    return _e(x)


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def _figure(width: float = 4.0, height: float = 2.8) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _values(report: dict[str, Any], key: str) -> list[float]:
    return [float(r["scores"][key]) for r in report.get("examples") or []
            if r.get("error") is None and isinstance((r.get("scores") or {}).get(key), (int, float))]


def _metric_keys(report: dict[str, Any]) -> list[str]:
    overall = (report.get("metrics") or {}).get("overall") or {}
    return [k for k, s in overall.items() if s.get("n") and k not in SKIP_PLOTS]


def distributions_plot(keys: list[str], runs: dict[str, dict[str, Any]], cols: int = 4) -> str:
    """One figure, one small histogram per metric; with several runs, overlaid."""
    keys = [k for k in keys if any(_values(r, k) for r in runs.values())]
    if not keys:
        return ""
    rows = (len(keys) + cols - 1) // cols
    fig = _figure(3.0 * min(cols, len(keys)), 2.3 * rows)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, min(cols, len(keys)), i + 1)
        discrete = key.startswith("judge.") and not key.endswith(".expected")
        bins: Any = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] if discrete else 15
        for label, report in runs.items():
            values = _values(report, key)
            if values:
                ax.hist(values, bins=bins, alpha=0.55 if len(runs) > 1 else 0.9, label=f"{label} n={len(values)}")
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.subplots_adjust(hspace=0.55, wspace=0.3)
    return _png(fig)


def means_plot(keys: list[str], runs: dict[str, dict[str, Any]]) -> str:
    """Grouped bars of per-metric means with 95% intervals, one colour per run."""
    if not keys:
        return ""
    fig = _figure(max(4.0, 1.1 * len(keys) + 1.5), 3.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    for j, (label, report) in enumerate(runs.items()):
        overall = (report.get("metrics") or {}).get("overall") or {}
        means, lows, highs = [], [], []
        for k in keys:
            s = overall.get(k) or {}
            m = s.get("mean") or 0.0
            lo, hi = s.get("ci95") or (m, m)
            means.append(m)
            lows.append(m - lo)
            highs.append(hi - m)
        xs = [i + j * width for i in range(len(keys))]
        ax.bar(xs, means, width=width, yerr=[lows, highs], capsize=3, label=label)
    ax.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(keys))])
    ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=7)
    ax.set_title("means with 95% intervals")
    return _png(fig)


def _table(headers: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i >= numeric_from else ""}">{_fmt(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metrics_table(overall: dict[str, Any]) -> str:
    return _table(["metric", "n", "mean", "95% CI", "std", "min", "max"],
                  [[k, s["n"], s["mean"], s["ci95"], s["std"], s["min"], s["max"]] for k, s in overall.items()])


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>")


def render_report(report: dict[str, Any], max_examples: int = 50) -> str:
    suite = report.get("suite") or {}
    timing = report.get("timing") or {}
    parts = [f"<h1>{_e(suite.get('name'))}</h1><p class='muted'>{_e(suite.get('description', ''))}</p>",
             f"<p>run <code>{_e(report.get('run_id'))}</code> · finished {_e(report.get('finished_at'))}</p>",
             _table(["n", "errors", "wall s / example", "mean latency s", "concurrency", "load avg start",
                     "load avg end", "CPUs"],
                    [[report.get("n"), report.get("n_errors"), timing.get("wall_s_per_example"),
                      timing.get("mean_latency_s"), timing.get("concurrency"),
                      (timing.get("machine_start") or {}).get("loadavg"),
                      (timing.get("machine_end") or {}).get("loadavg"),
                      (timing.get("machine_start") or {}).get("cpu_count")]], numeric_from=0),
             "<h2>System</h2><pre>" + _e(json.dumps(report.get("system"), indent=2)) + "</pre>"]
    corpus = report.get("corpus") or {}
    if corpus:
        parts.append("<h2>Corpus figures</h2>" + _table(["figure", "value"], [[k, json.dumps(v) if isinstance(
            v, dict) else v] for k, v in corpus.items()]))
    metrics = report.get("metrics") or {}
    parts.append("<h2>Per-example metrics</h2>" + _metrics_table(metrics.get("overall") or {}))
    for group, overall in (metrics.get("groups") or {}).items():
        parts.append(f"<h3>{_e(suite.get('group_by'))} = {_e(group)}</h3>" + _metrics_table(overall))
    judges = report.get("judges") or {}
    if judges:
        panel = report.get("judge_panel") or {}
        parts.append(f"<h2>Judges</h2><p>model <code>{_e(panel.get('model'))}</code>, mode {_e(panel.get('mode'))}, "
                     f"structured-output fallbacks {_e(panel.get('structured_fallbacks'))}</p>")
        parts.append(_table(["judge", "n scored", "mean", "parse failures", "engine errors", "skipped", "truncated",
                             "agreement", "trusted"],
                            [[k, j["n"], j["mean"], j["parse_failures"], j["engine_errors"], j["skipped"],
                              j["truncated"], j.get("agreement"), j.get("trusted")] for k, j in judges.items()]))
    parts.append("<h2>Distributions</h2><div class='plots'>"
                 + distributions_plot(_metric_keys(report), {"this run": report}) + "</div>")
    if report.get("errors"):
        parts.append("<h2>Errors</h2>" + _table(["id", "error"], [[e["id"], e["error"]] for e in report["errors"]],
                                                numeric_from=9))
    rows = []
    for rec in (report.get("examples") or [])[:max_examples]:
        pred = (rec.get("prediction") or {}).get("text", "")
        scores = ", ".join(f"{k}={_fmt(v, 2)}" for k, v in (rec.get("scores") or {}).items()
                           if k not in ("latency_s", "judge_latency_s"))
        rows.append(f"<tr><td>{_e(rec['id'])}</td><td class='text'>{_e(rec.get('input', ''))}</td>"
                    f"<td class='text'>{_e(pred[:1500])}</td><td class='text'>{_e(rec.get('reference') or '')}</td>"
                    f"<td class='text'>{_e(rec.get('error') or scores)}</td></tr>")
    parts.append(f"<h2>Examples (first {min(max_examples, len(report.get('examples') or []))})</h2>"
                 "<table><tr><th>id</th><th>input</th><th>prediction</th><th>reference</th><th>scores</th></tr>"
                 + "".join(rows) + "</table>")
    return _page(f"eval: {suite.get('name')}", "".join(parts))


def render_comparison(a: dict[str, Any], b: dict[str, Any], comparison: dict[str, Any]) -> str:
    la = f"A: {(a.get('system') or {}).get('model')} ({a.get('run_id')})"
    lb = f"B: {(b.get('system') or {}).get('model')} ({b.get('run_id')})"
    rows = [[r["metric"], r["a"], r["b"], r["delta"], r.get("paired_n"), r.get("paired_delta_ci95"),
             r.get("b_win_rate"), r.get("b_win_rate_ci95")] for r in comparison["metrics"]]
    keys = [k for k in _metric_keys(a) if k in set(_metric_keys(b))]
    bars = means_plot([k for k in keys if not k.endswith("latency_s")], {"A": a, "B": b})
    plots = [distributions_plot(keys, {"A": a, "B": b})]
    body = (f"<h1>{_e((a.get('suite') or {}).get('name'))}: two runs side by side</h1>"
            f"<p>{_e(la)}<br>{_e(lb)}<br>examples scored by both: {comparison['common_examples']}</p>"
            + _table(["metric", "A", "B", "B − A", "paired n", "paired Δ 95% CI", "B win rate", "win rate 95% CI"],
                     rows)
            + "<div class='plots'>" + bars + "".join(plots) + "</div>"
            + "<h2>Systems</h2><table><tr><th>A</th><th>B</th></tr><tr><td><pre>"
            + _e(json.dumps(a.get("system"), indent=2)) + "</pre></td><td><pre>"
            + _e(json.dumps(b.get("system"), indent=2)) + "</pre></td></tr></table>")
    return _page("eval comparison", body)
