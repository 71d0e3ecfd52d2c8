"""Evaluation toolkit: metrics, LLM judges, safety checks, suites and reports.

Layout (each module says what it knows and what it does not):

* ``metrics/``  pure functions: classification, spans, text overlap, semantic, retrieval, preference;
* ``judges/``   LLM-as-judge rubrics (1-5) over any :class:`~agentstack.engines.base.ChatEngine`,
  and their agreement with human preference labels;
* ``safety``    the refusal classifier, refusal and over-refusal rates;
* ``datasets/`` adapters turning the public sets into :class:`Example` records;
* ``systems``   the :class:`System` under test (plain model, map-reduce; more kinds register);
* ``suite``, ``runner``, ``reports``, ``html``: YAML suites, resumable runs, JSON + HTML reports.

Entry points for other subsystems (server, alignment gate, benchmarks):

* ``runner.run_suite(load_suite(path), settings)``: run or resume a suite; returns the report;
* ``reports.list_reports(settings.eval_path)`` (for ``GET /v1/admin/eval/reports``),
  ``reports.load_report``, ``reports.compare_reports``, ``reports.gate_figures``;
* ``judges.JudgePanel`` (scores), ``judges.agreement.load_agreement`` / ``trusted_judges``;
* ``metrics.win_rate`` / ``win_rate_from_scores`` (preference, with a Wilson 95% interval);
* ``safety.classify_refusal`` / ``refusal_rate``.

Nothing here is imported by ``import agentstack.evaluation`` except this docstring; import the
submodule you need. See docs/evaluation.md.
"""
