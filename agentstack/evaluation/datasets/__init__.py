"""Dataset adapters. Importing this package registers the built-in ones."""

from agentstack.evaluation.datasets import safety_sets, text_sets  # noqa: F401  (registration)
from agentstack.evaluation.datasets.base import ADAPTERS, Example, load_examples, register_adapter

__all__ = ["ADAPTERS", "Example", "load_examples", "register_adapter"]
