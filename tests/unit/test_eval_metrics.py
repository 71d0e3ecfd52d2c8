"""Metrics against hand-worked and published values (never against the library they wrap)."""

from __future__ import annotations

import math

import pytest

from agentstack.evaluation.metrics import (
    Counts,
    classification_report,
    corpus_bleu,
    corpus_chrf,
    embedding_cosine,
    exact_match,
    f_beta,
    match_spans,
    mean_retrieval_scores,
    ndcg_at_k,
    precision_at_k,
    prf_from_counts,
    recall_at_k,
    reciprocal_rank,
    rouge,
    sentence_bleu,
    span_report,
    summarize,
    token_f1,
    wilson_interval,
    win_rate,
    win_rate_from_scores,
)

pytestmark = pytest.mark.unit
approx = pytest.approx


# --- classification -------------------------------------------------------------------------------
def test_precision_recall_f_by_hand():
    # y_true a a a b b c / y_pred a a b b c c
    # a: tp 2 fp 0 fn 1 -> P 1, R 2/3, F 0.8; b: tp 1 fp 1 fn 1 -> 0.5/0.5/0.5; c: tp 1 fp 1 fn 0 -> 0.5/1/(2/3)
    r = classification_report(list("aaabbc"), list("aabbcc"))
    assert (r.per_label["a"].precision, r.per_label["a"].recall, r.per_label["a"].f) == approx((1, 2 / 3, 0.8))
    assert (r.per_label["b"].precision, r.per_label["b"].recall, r.per_label["b"].f) == approx((0.5, 0.5, 0.5))
    assert r.per_label["c"].f == approx(2 / 3)
    # micro pools counts: tp 4, fp 2, fn 2
    assert (r.micro.precision, r.micro.recall, r.micro.f) == approx((4 / 6, 4 / 6, 4 / 6))
    # macro: mean of per-label F, not F of mean P and R
    assert r.macro.f == approx((0.8 + 0.5 + 2 / 3) / 3)
    assert r.macro.recall == approx((2 / 3 + 0.5 + 1) / 3)
    assert r.per_label["a"].support == 3


def test_f_beta_by_hand():
    # P = 1, R = 2/3: F2 = 5·(2/3) / (4 + 2/3) = 10/14; F0.5 = 1.25·(2/3) / (0.25 + 2/3) = 10/11
    assert f_beta(1.0, 2 / 3, 2.0) == approx(10 / 14)
    assert f_beta(1.0, 2 / 3, 0.5) == approx(10 / 11)
    assert f_beta(0.0, 0.0) == 0.0
    with pytest.raises(ValueError):
        f_beta(0.5, 0.5, 0)
    p = prf_from_counts(Counts(tp=3, fp=1, fn=3), beta=2)
    assert (p.precision, p.recall) == approx((0.75, 0.5))
    assert p.f == approx(5 * 0.75 * 0.5 / (4 * 0.75 + 0.5))


def test_classification_length_mismatch_names_sizes():
    with pytest.raises(ValueError, match="3 items.*2"):
        classification_report([1, 2, 3], [1, 2])


# --- spans ----------------------------------------------------------------------------------------
GOLD = [(0, 10, "PERSON"), (20, 30, "EMAIL"), (40, 50, "PERSON")]


def test_span_exact_and_overlap_by_hand():
    pred = [(0, 10, "PERSON"), (22, 30, "EMAIL"), (40, 50, "LOCATION"), (60, 65, "PERSON")]
    exact = span_report([(GOLD, pred)], mode="exact")
    # exact + label: only (0,10,PERSON) matches. tp 1; fp 3 (22-30 EMAIL, 40-50 LOCATION, 60-65 PERSON); fn 2
    assert (exact.micro.precision, exact.micro.recall) == approx((1 / 4, 1 / 3))
    overlap = span_report([(GOLD, pred)], mode="overlap")
    # overlap + label: PERSON 0-10 and EMAIL 20-30 match; tp 2, fp 2, fn 1
    assert (overlap.micro.precision, overlap.micro.recall) == approx((2 / 4, 2 / 3))
    assert overlap.per_label["EMAIL"].f == approx(1.0)
    assert overlap.per_label["LOCATION"].precision == 0.0
    unlabeled = span_report([(GOLD, pred)], mode="overlap", match_label=False)
    # location only: three of three gold found, one spurious prediction
    assert (unlabeled.micro.precision, unlabeled.micro.recall) == approx((3 / 4, 1.0))


def test_span_matching_is_one_to_one():
    gold = [(0, 10, "PERSON")]
    pred = [(0, 4, "PERSON"), (5, 10, "PERSON"), (0, 10, "PERSON")]
    pairs = match_spans(gold, pred, mode="overlap")
    assert pairs == [(0, 2)]  # the largest overlap wins, the other two are false positives
    r = span_report([(gold, pred)], mode="overlap")
    assert (r.micro.precision, r.micro.recall) == approx((1 / 3, 1.0))


def test_span_min_overlap_and_presidio_dicts():
    gold = [{"entity_type": "PERSON", "start_position": 0, "end_position": 10}]
    assert match_spans(gold, [(8, 20, "PERSON")], mode="overlap") == [(0, 0)]
    assert match_spans(gold, [(8, 20, "PERSON")], mode="overlap", min_overlap=0.5) == []  # 2 of 10 chars
    with pytest.raises(ValueError, match="before its start"):
        match_spans([(5, 1, "X")], [])


# --- text -----------------------------------------------------------------------------------------
def test_exact_match_and_token_f1_squad_rules():
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("Eiffel", ["Paris", "eiffel"]) == 1.0
    assert exact_match("tower", "eiffel tower") == 0.0
    # "cat sat on mat" vs "cat is on mat": 3 shared of 4 and 4 -> F1 0.75
    assert token_f1("The cat sat on a mat.", "A cat is on the mat") == approx(0.75)
    # shared tokens count with multiplicity: x x y / x y y share one x and one y -> P = R = 2/3
    assert token_f1("x x y", "x y y") == approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0
    assert token_f1("red", ["blue", "red"]) == 1.0


def test_rouge_rouge_score_readme_example_by_hand():
    # target "The quick brown fox jumps over the lazy dog" (9 tokens), prediction 8 tokens.
    # ROUGE-1: shared the×2 quick brown dog jumps = 6 -> P 6/8, R 6/9, F 12/17
    # ROUGE-2: shared "the quick", "quick brown" -> P 2/7, R 2/8, F 4/15
    # ROUGE-L: LCS "the quick brown jumps the" = 5 -> P 5/8, R 5/9, F 10/17
    s = rouge("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog",
              stemmer=False)
    assert s == approx({"rouge1": 12 / 17, "rouge2": 4 / 15, "rougeL": 10 / 17})
    p = rouge("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog",
              stemmer=False, measure="precision")
    assert p["rouge1"] == approx(6 / 8)


def test_rouge_l_lin_2004_example():
    # Lin (2004), section 3.1: reference S1 "police killed the gunman"; S2 "police kill the gunman"
    # and S3 "the gunman kill police" share one bigram each (same ROUGE-2, 1/3), but ROUGE-L tells
    # them apart: LCS 3 of 4 words for S2, 2 of 4 for S3.
    ref = "police killed the gunman"
    assert rouge("police kill the gunman", ref, stemmer=False)["rouge2"] == approx(1 / 3)
    assert rouge("the gunman kill police", ref, stemmer=False)["rouge2"] == approx(1 / 3)
    assert rouge("police kill the gunman", ref, stemmer=False)["rougeL"] == approx(3 / 4)
    assert rouge("the gunman kill police", ref, stemmer=False)["rougeL"] == approx(1 / 2)
    # with Porter stemming "killed" = "kill": S2 becomes identical
    assert rouge("police kill the gunman", ref)["rougeL"] == approx(1.0)
    # several references: the best counts
    assert rouge("police kill the gunman", ["nothing alike", ref], stemmer=False)["rougeL"] == approx(3 / 4)


def test_bleu_sacrebleu_documented_example():
    # sacrebleu README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)
    # and chrF2 = 59.73, for these sentences and two reference streams.
    refs1 = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]
    refs2 = ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    per_example = [[a, b] for a, b in zip(refs1, refs2)]
    b = corpus_bleu(hyps, per_example)
    assert b["score"] == approx(48.53, abs=0.005)
    assert [round(x, 1) for x in b["precisions"]] == [82.4, 50.0, 45.5, 37.5]
    assert (b["sys_len"], b["ref_len"]) == (17, 18)
    assert b["bp"] == approx(0.943, abs=5e-4)
    assert corpus_chrf(hyps, per_example) == approx(59.73, abs=0.005)


def test_bleu_by_hand():
    # ref "the quick brown fox jumps over the lazy dog" (9), hyp drops "lazy" (8 tokens).
    # precisions 8/8, 6/7, 5/6, 4/5; geometric mean (4/7)^(1/4); BP exp(1 - 9/8).
    expected = 100 * (4 / 7) ** 0.25 * math.exp(1 - 9 / 8)
    hyp, ref = "the quick brown fox jumps over the dog", "the quick brown fox jumps over the lazy dog"
    b = corpus_bleu([hyp], [ref])
    assert b["score"] == approx(expected, rel=1e-9)
    assert b["precisions"] == approx([100, 600 / 7, 500 / 6, 80])
    assert sentence_bleu(hyp, ref) == approx(expected, rel=1e-9)  # no zero counts: smoothing idle
    # Papineni et al. (2002): "the the the the the the the" has modified unigram precision 2/7
    papineni = corpus_bleu(["the the the the the the the"], [["the cat is on the mat", "there is a cat on the mat"]])
    assert papineni["precisions"][0] == approx(100 * 2 / 7)


def test_bleu_lengths_must_match():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        corpus_bleu(["a", "b"], ["a"])


# --- semantic -------------------------------------------------------------------------------------
class _FixedEncoder:
    def __init__(self, table):
        self.table = table
        self.calls = 0

    def encode(self, texts):
        import numpy as np

        self.calls += 1
        return np.array([self.table[t] for t in texts], dtype=float)


def test_embedding_cosine_by_hand():
    enc = _FixedEncoder({"a": [1, 0], "b": [1, 1], "c": [0, 3], "z": [0, 0], "d": [-2, 0]})
    sims = embedding_cosine(enc, ["a", "c", "a", "z"], ["b", "b", "d", "a"])
    assert sims == approx([1 / math.sqrt(2), 1 / math.sqrt(2), -1.0, 0.0])
    assert enc.calls == 1


# --- retrieval ------------------------------------------------------------------------------------
def test_recall_precision_mrr_by_hand():
    ranked = ["d3", "d1", "d7", "d2", "d9"]
    relevant = {"d1", "d2", "d5"}
    assert recall_at_k(ranked, relevant, 2) == approx(1 / 3)
    assert recall_at_k(ranked, relevant, 5) == approx(2 / 3)
    assert precision_at_k(ranked, relevant, 2) == approx(1 / 2)
    assert precision_at_k(ranked, relevant, 10) == approx(2 / 10)  # divides by k, not by list length
    assert reciprocal_rank(ranked, relevant) == approx(1 / 2)
    assert reciprocal_rank(["x"], relevant) == 0.0
    assert recall_at_k(["d1", "d1", "d2"], relevant, 2) == approx(2 / 3)  # duplicates count once
    with pytest.raises(ValueError):
        recall_at_k(ranked, relevant, 0)


def test_ndcg_wikipedia_worked_example():
    # Wikipedia "Discounted cumulative gain": relevances 3,2,3,0,1,2 give DCG6 = 6.861;
    # ideal among the six 3,3,2,2,1,0 -> IDCG6 = 7.141, nDCG = 0.961;
    # with two more relevant documents (3 and 2) unretrieved, IDCG6 = 8.740 and nDCG = 0.785.
    ranked = ["D1", "D2", "D3", "D4", "D5", "D6"]
    grades = {"D1": 3, "D2": 2, "D3": 3, "D4": 0, "D5": 1, "D6": 2}
    assert ndcg_at_k(ranked, grades, 6) == approx(6.861 / 7.141, abs=1e-3)
    assert ndcg_at_k(ranked, {**grades, "D7": 3, "D8": 2}, 6) == approx(0.785, abs=1e-3)
    assert ndcg_at_k(["x"], {"D1": 1}, 3) == 0.0
    assert ndcg_at_k(["D1"], set(), 3) == 0.0


def test_mean_retrieval_scores():
    m = mean_retrieval_scores([(["a", "b"], {"a"}), (["b", "a"], {"a"})], ks=(1,))
    assert m["mrr"] == approx(0.75)
    assert m["recall@1"] == approx(0.5)


# --- preference and statistics --------------------------------------------------------------------
def test_wilson_interval_published_value():
    # 8 successes in 10: Wilson 95% interval (0.490, 0.943) (Newcombe 1998, table I style)
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == approx(1.0)


def test_win_rate_counts_ties_as_half():
    w = win_rate(["a"] * 6 + ["b"] * 2 + ["tie"] * 2 + [None])
    assert (w.wins, w.losses, w.ties, w.n) == (6, 2, 2, 10)
    assert w.rate == approx(0.7)
    assert w.ci95 == approx(wilson_interval(7, 10))
    assert not w.significant()
    assert win_rate(["a"] * 40).significant()
    assert win_rate([]).rate is None
    with pytest.raises(ValueError):
        win_rate(["maybe"])


def test_win_rate_from_scores_with_margin():
    w = win_rate_from_scores([3, 5, 2, None, 4.05], [2, 5, 4, 1, 4.0], margin=0.1)
    assert (w.wins, w.losses, w.ties) == (1, 1, 2)


def test_summarize_skips_missing_and_reports_n():
    s = summarize([1, 2, 3, None, 4])
    assert s.n == 4 and s.mean == approx(2.5)
    assert s.std == approx(math.sqrt(5 / 3))
    assert s.ci95[0] <= 2.5 <= s.ci95[1]
    assert summarize([None]).n == 0
