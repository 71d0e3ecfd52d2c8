"""Tools for the ReAct agent: a registry, the built-in tools and the deployment's allowlist.

Built-ins: ``search`` (the retriever over the conversation's index), ``calculator`` (arithmetic by
walking the Python AST: numbers, + - * / // % **, parentheses and a few math functions; no names,
no attribute access, no ``eval``), ``lookup_document`` (reads a chunk by id). Any Python callable
can be registered with :meth:`ToolRegistry.register`.

``policies/tools.yaml`` lists the tools this deployment allows. A request may narrow that list,
never widen it: asking for a tool outside it is an error, and a call the model makes to a tool
outside the active set is refused in code (the grammar already forbids it on the embedded engine).
Each call runs under a timeout; exceptions become observations the model can read.

This module knows nothing about prompts or HTTP.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import math
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentstack.errors import ConfigError, ForbiddenError, InvalidRequestError
from agentstack.resources import resource_file


@dataclass
class Tool:
    name: str
    description: str
    func: Callable[[str], Any] | Callable[[str], Awaitable[Any]]
    input_hint: str = "text"
    input_pattern: str | None = None  # a regex the input must match; structured decoding enforces it
    input_grammar: tuple[str, str] | None = None  # (start rule, Lark rules) for inputs with structure

    async def __call__(self, arg: str) -> str:
        if inspect.iscoroutinefunction(self.func):
            result = await self.func(arg)
        else:
            result = await asyncio.to_thread(self.func, arg)
        return result if isinstance(result, str) else str(result)


class ToolPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed: list[str] = Field(default_factory=lambda: ["search", "calculator", "lookup_document"])
    max_steps: int = Field(default=6, ge=1, le=50)
    tool_timeout_s: float = Field(default=10.0, gt=0, le=600)
    max_observation_chars: int = Field(default=1200, ge=100)
    timeouts: dict[str, float] = Field(default_factory=dict)

    def timeout_for(self, name: str) -> float:
        return self.timeouts.get(name, self.tool_timeout_s)


def load_tool_policy(policies_dir: Path | None = None) -> ToolPolicy:
    path = resource_file("policies", "tools.yaml", policies_dir)
    try:
        return ToolPolicy(**(yaml.safe_load(path.read_text()) or {}))
    except (yaml.YAMLError, ValidationError, TypeError) as exc:
        raise ConfigError(f"{path} is not a valid tool policy: {exc}", fix="see the comments in policies/tools.yaml")


@dataclass
class ToolRegistry:
    tools: dict[str, Tool] = field(default_factory=dict)

    def register(self, name: str, func: Callable[..., Any], description: str, input_hint: str = "text",
                 input_pattern: str | None = None, input_grammar: tuple[str, str] | None = None) -> Tool:
        if not name.isidentifier():
            raise ValueError(f"tool name {name!r} must be an identifier")
        tool = Tool(name, description, func, input_hint, input_pattern, input_grammar)
        self.tools[name] = tool
        return tool

    def active(self, policy: ToolPolicy, requested: list[str] | None = None) -> dict[str, Tool]:
        """The tools a request may use: the policy's allowlist, narrowed by ``requested``."""
        allowed = [t for t in policy.allowed if t in self.tools]
        if requested is None:
            return {t: self.tools[t] for t in allowed}
        outside = [t for t in requested if t not in allowed]
        if outside:
            raise ForbiddenError(f"tools {outside} are not allowed in this deployment; allowed: {allowed}",
                                 param="tools", fix="ask only for tools listed in policies/tools.yaml")
        return {t: self.tools[t] for t in requested}


# -- calculator ---------------------------------------------------------------------------------------
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., float]] = {"sqrt": math.sqrt, "log": math.log, "log10": math.log10,
                                           "exp": math.exp, "sin": math.sin, "cos": math.cos, "tan": math.tan,
                                           "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil}
_CONSTS = {"pi": math.pi, "e": math.e}


def calculate(expression: str) -> str:
    """Evaluate arithmetic safely. Raises :class:`InvalidRequestError` for anything else."""
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/").rstrip("=").strip()
    text = text.replace(",", "") if "(" not in text else text
    if not text or len(text) > 200:
        raise InvalidRequestError("the expression must have 1 to 200 characters", param="expression")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise InvalidRequestError(f"not an arithmetic expression: {expression!r}", param="expression") from None

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 100 or abs(left) > 1e6):
                raise InvalidRequestError("exponent too large", param="expression")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS \
                and not node.keywords and len(node.args) <= 2:
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        if isinstance(node, ast.Name) and node.id in _CONSTS:
            return _CONSTS[node.id]
        raise InvalidRequestError(f"unsupported element {type(node).__name__} in {expression!r}",
                                  param="expression", fix="use numbers, + - * / // % ** and sqrt, log, …")

    try:
        value = ev(tree)
    except ZeroDivisionError:
        raise InvalidRequestError("division by zero", param="expression") from None
    except (OverflowError, ValueError) as exc:
        raise InvalidRequestError(f"cannot compute {expression!r}: {exc}", param="expression") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}" if isinstance(value, float) else str(value)


# The calculator's input is an arithmetic expression by construction, and a bounded one (at most
# four terms of three factors, one level of parentheses): under structured decoding a model can
# neither append "= 1025" or prose to it nor loop on "+ 17772 + 17772 …".
CALCULATOR_GRAMMAR = ("calc_expr", r"""
calc_expr: calc_term (CALC_ADD calc_term)? (CALC_ADD calc_term)? (CALC_ADD calc_term)?
calc_term: calc_factor (CALC_MUL calc_factor)? (CALC_MUL calc_factor)?
calc_factor: CALC_NEG? (CALC_NUM | CALC_FN? "(" calc_inner ")")
calc_inner: calc_iterm (CALC_ADD calc_iterm)? (CALC_ADD calc_iterm)?
calc_iterm: CALC_NEG? CALC_NUM (CALC_MUL CALC_NEG? CALC_NUM)?
CALC_ADD: / ?[+-] ?/
CALC_MUL: / ?(\*\*|\*|\/\/|\/|%|\^) ?/
CALC_NEG: /-/
CALC_FN: /(sqrt|log|log10|exp|abs|round|floor|ceil)/
CALC_NUM: /[0-9]{1,12}(\.[0-9]{1,8})?/
""")


def builtin_registry(index: Any | None = None, *, k: int = 3, snippet_chars: int = 400) -> ToolRegistry:
    """The built-in tools; ``search`` and ``lookup_document`` need an index (an ``Index``)."""
    registry = ToolRegistry()
    registry.register("calculator", calculate, "Evaluate an arithmetic expression, e.g. 12 * (3 + 4) / 2.",
                      "expression", input_grammar=CALCULATOR_GRAMMAR)
    if index is not None:
        def search(query: str) -> str:
            hits = index.search(query, k=k, mode="hybrid")
            if not hits:
                return "No results."
            return "\n".join(f"(chunk {h.chunk_id}) {h.title}: {h.text[:snippet_chars]}" for h in hits)

        def lookup(chunk_id: str) -> str:
            digits = "".join(ch for ch in chunk_id if ch.isdigit())
            if not digits:
                raise InvalidRequestError(f"{chunk_id!r} is not a chunk id", param="chunk_id")
            chunk = index.chunk(int(digits))
            return f"{chunk['title']}: {chunk['text']}"

        registry.register("search", search, "Search the document index; returns chunks with their ids.", "query")
        registry.register("lookup_document", lookup, "Read the full text of a chunk by its id.", "chunk id",
                          input_pattern=r"[0-9]{1,12}")
    return registry
