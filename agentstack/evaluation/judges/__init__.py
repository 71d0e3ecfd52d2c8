"""LLM-as-judge: rubric scores (1-5), pairwise preferences, and agreement with human labels."""

from agentstack.evaluation.judges.panel import JudgePanel, JudgeScore, PairVerdict, parse_choice, parse_score
from agentstack.evaluation.judges.rubrics import RUBRICS, Rubric

JUDGES = tuple(RUBRICS)

__all__ = ["JUDGES", "RUBRICS", "JudgePanel", "JudgeScore", "PairVerdict", "Rubric", "parse_choice", "parse_score"]
