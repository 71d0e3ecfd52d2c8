"""Metrics, one small module per family. Everything public is re-exported here."""

from agentstack.evaluation.metrics.classification import (
                                                          PRF,
                                                          ClassificationReport,
                                                          Counts,
                                                          binary_prf,
                                                          classification_report,
                                                          f_beta,
                                                          prf_from_counts,
                                                          report_from_counts,
)
from agentstack.evaluation.metrics.preference import (
                                                          WinRate,
                                                          outcomes_from_scores,
                                                          win_rate,
                                                          win_rate_from_scores,
)
from agentstack.evaluation.metrics.retrieval import (
                                                          mean_retrieval_scores,
                                                          ndcg_at_k,
                                                          precision_at_k,
                                                          recall_at_k,
                                                          reciprocal_rank,
                                                          retrieval_scores,
)
from agentstack.evaluation.metrics.semantic import embedding_cosine
from agentstack.evaluation.metrics.spans import Span, match_spans, span_counts, span_report
from agentstack.evaluation.metrics.stats import Summary, bootstrap_ci, summarize, wilson_interval
from agentstack.evaluation.metrics.text import (
                                                          corpus_bleu,
                                                          corpus_chrf,
                                                          exact_match,
                                                          normalize_answer,
                                                          rouge,
                                                          sentence_bleu,
                                                          sentence_chrf,
                                                          token_f1,
)

__all__ = [
    "PRF", "ClassificationReport", "Counts", "Span", "Summary", "WinRate", "binary_prf", "bootstrap_ci",
    "classification_report", "corpus_bleu", "corpus_chrf", "embedding_cosine", "exact_match", "f_beta",
    "match_spans", "mean_retrieval_scores", "ndcg_at_k", "normalize_answer", "outcomes_from_scores",
    "precision_at_k", "prf_from_counts", "recall_at_k", "reciprocal_rank", "report_from_counts",
    "retrieval_scores", "rouge", "sentence_bleu", "sentence_chrf", "span_counts", "span_report", "summarize",
    "token_f1", "wilson_interval", "win_rate", "win_rate_from_scores",
]
