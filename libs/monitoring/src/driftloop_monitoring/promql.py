"""PromQL structure from a real parser (``promql-parser``), for rules and the tests that run them.

An alert rule such as ``A > on() group_left() B`` returns nothing while it is not firing, so
"the rule returns data" proves little. What must hold on a healthy stack is that each side of
the comparison returns data (the drift gauge and the threshold gauge both exist). The helpers
here take expressions apart on the syntax tree, so operator precedence, modifiers, strings and
parentheses are the parser's business, and an expression that is not PromQL fails loudly.

Sub-expressions are handed back as *canonical text* (the parser's pretty-printer, the same
format as Prometheus' own ``promql.Prettify``): valid PromQL to send to Prometheus, and equal
for two expressions that differ only in spacing or redundant parentheses.
"""

from __future__ import annotations

from dataclasses import dataclass

import promql_parser as pp

#: Comparison operators (the condition of an alert rule).
COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def parse(expr: str) -> pp.Expr:
    """The syntax tree of ``expr``; raises ValueError if it is not PromQL."""
    try:
        return pp.parse(expr)
    except ValueError as exc:
        raise ValueError(f"not PromQL ({exc}): {expr}") from exc


def unwrap(node: pp.Expr) -> pp.Expr:
    """``node`` without the parentheses that enclose all of it."""
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return node


def text(node: pp.Expr) -> str:
    """Canonical PromQL text of a (sub-)expression, enclosing parentheses removed."""
    return unwrap(node).prettify()


def canonical(expr: str) -> str:
    """Canonical text of ``expr``: two spellings of one expression give the same string."""
    return text(parse(expr))


@dataclass(frozen=True)
class Comparison:
    """An expression whose outermost operation is a comparison: ``lhs op [modifier] rhs``."""

    lhs: pp.Expr
    op: str
    #: Vector matching / ``bool`` as PromQL spells it (``on () group_left ()``), or "".
    modifier: str
    rhs: pp.Expr


def comparison(expr: str) -> Comparison | None:
    """``expr`` as a comparison, or None if its outermost operation is something else."""
    node = unwrap(parse(expr))
    if not isinstance(node, pp.BinaryExpr) or str(node.op) not in COMPARISONS:
        return None
    modifier = " ".join(str(node.modifier).split()) if node.modifier is not None else ""
    return Comparison(node.lhs, str(node.op), modifier, node.rhs)


def is_number(node: pp.Expr) -> bool:
    """True for a number literal (also negated or parenthesised)."""
    node = unwrap(node)
    if isinstance(node, pp.UnaryExpr):
        node = unwrap(node.expr)
    return isinstance(node, pp.NumberLiteral)


def needs_parens(expr: str) -> bool:
    """True if ``expr`` must be parenthesised to be one side of a comparison."""
    return isinstance(parse(expr), pp.BinaryExpr)


def operands_needing_data(expr: str) -> list[str]:
    """The sub-expressions that must each return data on a healthy, busy stack.

    * ``x > y`` (any comparison): both sides, recursively (numbers excepted).
    * ``x and y``: both sides; ``x unless y``: only ``x`` (``y`` is empty by design).
    * ``x or y``: the whole expression (``or`` is a fallback, so one side may be empty).
    * anything else (arithmetic included): itself.
    """
    return _needing_data(parse(expr))


def _needing_data(node: pp.Expr) -> list[str]:
    node = unwrap(node)
    if is_number(node):
        return []
    if not isinstance(node, pp.BinaryExpr):
        return [text(node)]
    op = str(node.op)
    if op in COMPARISONS or op == "and":
        return _needing_data(node.lhs) + _needing_data(node.rhs)
    if op == "unless":
        return _needing_data(node.lhs)
    return [text(node)]


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (histogram suffixes kept)."""
    names: set[str] = set()

    def visit(node: pp.Expr) -> None:
        if isinstance(node, pp.VectorSelector) and node.name:
            names.add(node.name)

    pp.walk(parse(expr), pre_visit=visit)
    return names


def base_metric(name: str) -> str:
    """``x_bucket`` / ``x_count`` / ``x_sum`` -> ``x`` (the name Prometheus' metadata uses)."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
