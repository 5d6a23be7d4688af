"""Just enough PromQL structure to test alert expressions operand by operand.

An alert rule such as ``A > on() group_left() B`` returns nothing while it is not firing, so
"the rule returns data" proves little. What must hold on a healthy stack is that each side of
the comparison returns data (the drift gauge and the threshold gauge both exist). This module
finds top-level binary operators (outside parentheses, braces, brackets and strings), splits
expressions into operands and names the metrics an expression reads. It is not a parser: it
relies on the expressions being valid PromQL, which ``promtool check rules`` proves separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Binary operator precedence, lowest first (PromQL: or < and/unless < comparisons < +- < ...).
_LEVELS: tuple[tuple[str, ...], ...] = (
    ("or",),
    ("and", "unless"),
    ("==", "!=", ">=", "<=", ">", "<"),
)
_WORD_OPS = {"or", "and", "unless"}
_MODIFIERS = re.compile(
    r"^\s*(?:bool\s+)?"
    r"(?:(?:on|ignoring)\s*\([^)]*\)\s*)?"
    r"(?:(?:group_left|group_right)\s*(?:\([^)]*\))?\s*)?"
)
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+|inf|nan)$", re.IGNORECASE)
_STRING = re.compile(r"\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|`[^`]*`")
_METRIC = re.compile(r"(?<![\w:])(driftloop_[A-Za-z0-9_]+|up|ALERTS)(?![\w:])")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


@dataclass(frozen=True)
class Split:
    """An expression cut at its lowest-precedence top-level operators."""

    operands: list[str]
    operators: list[str]  # operator of each cut, modifiers stripped ("and", ">", ...)
    modifiers: list[str]  # what followed each operator ("on() group_left()", "bool", "")


def _top_level_positions(expr: str) -> list[tuple[int, str]]:
    """(index, operator) of every binary operator at nesting depth 0."""
    out: list[tuple[int, str]] = []
    depth = 0
    i = 0
    n = len(expr)
    prev_significant = ""
    while i < n:
        c = expr[i]
        if c in "\"'`":
            match = _STRING.match(expr, i)
            i = match.end() if match else n
            prev_significant = "x"
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            two = expr[i : i + 2]
            if two in ("==", "!=", ">=", "<="):
                out.append((i, two))
                i += 2
                prev_significant = "op"
                continue
            if c in "<>":
                out.append((i, c))
            elif c.isalpha() and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_:")):
                word = re.match(r"[A-Za-z_][A-Za-z0-9_:]*", expr[i:])
                assert word is not None
                token = word.group(0)
                if token in _WORD_OPS and prev_significant not in ("", "op"):
                    out.append((i, token))
                    prev_significant = "op"
                else:
                    prev_significant = "x"
                i += len(token)
                continue
        if not c.isspace():
            prev_significant = "op" if c in "<>=!" else "x"
        i += 1
    return out


def strip_parens(expr: str) -> str:
    """Remove parentheses that enclose the whole expression."""
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        depth = 0
        for i, c in enumerate(expr):
            depth += c == "("
            depth -= c == ")"
            if depth == 0 and i < len(expr) - 1:
                return expr
        expr = expr[1:-1].strip()
    return expr


def split(expr: str) -> Split | None:
    """Cut ``expr`` at its lowest-precedence top-level operators, or None if it has none."""
    expr = strip_parens(expr)
    positions = _top_level_positions(expr)
    for level in _LEVELS:
        cuts = [(i, op) for i, op in positions if op in level]
        if not cuts:
            continue
        operands: list[str] = []
        operators: list[str] = []
        modifiers: list[str] = []
        start = 0
        for i, op in cuts:
            operands.append(expr[start:i].strip())
            rest = expr[i + len(op) :]
            mod = _MODIFIERS.match(rest)
            mod_text = mod.group(0) if mod else ""
            operators.append(op)
            modifiers.append(" ".join(mod_text.split()))
            start = i + len(op) + len(mod_text)
        operands.append(expr[start:].strip())
        return Split(operands, operators, modifiers)
    return None


def is_number(expr: str) -> bool:
    return bool(_NUMBER.match(strip_parens(expr)))


def operands_needing_data(expr: str) -> list[str]:
    """The sub-expressions that must each return data on a healthy, busy stack.

    * ``x > y`` (any comparison): both sides, recursively (numbers excepted).
    * ``x and y``: both sides; ``x unless y``: only ``x`` (``y`` is empty by design).
    * ``x or y``: the whole expression (``or`` is a fallback, so one side may be empty).
    * anything else: itself.
    """
    parts = split(expr)
    if parts is None:
        return [] if is_number(expr) else [strip_parens(expr)]
    if parts.operators[0] == "or":
        return [strip_parens(expr)]
    out: list[str] = []
    for k, operand in enumerate(parts.operands):
        if k > 0 and parts.operators[k - 1] == "unless":
            continue
        out.extend(operands_needing_data(operand))
    return out


def needs_parens(expr: str) -> bool:
    """True if ``expr`` must be parenthesised to be one side of a comparison."""
    parts = split(expr)
    return parts is not None


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (string literals ignored); histogram suffixes kept."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def base_metric(name: str) -> str:
    """``x_bucket`` / ``x_count`` / ``x_sum`` -> ``x`` (the name Prometheus' metadata uses)."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
