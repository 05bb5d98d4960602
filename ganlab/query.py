"""`ganlab results --where`: a restricted expression over a table's columns, never code.

The expression is parsed with Python's grammar and evaluated here, node by node, on the table's
columns: names are columns (or True, False, None), constants are numbers and strings, and the
operators are comparisons (`==`, `<`, `in`, ...), `and`, `or`, `not`, `&`, `|`, `~` and
arithmetic. Function calls, attributes, subscripts, `@variables` and everything else are
refused, so a `--where` cannot run anything.
"""

import ast
import operator
from typing import Any

import pandas as pd

from ganlab.spec import BadInput

COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}  # fmt: skip
ARITHMETIC = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
}  # fmt: skip
CONSTANTS = {"True": True, "False": False, "None": None}


class QueryError(BadInput):
    """A `--where` expression that is not allowed or names no column."""


def select(frame: pd.DataFrame, expression: str) -> pd.DataFrame:
    """The rows of `frame` where `expression` holds."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise QueryError(f"--where {expression!r}: not an expression ({error.msg})") from None
    try:
        mask = _evaluate(tree.body, frame, expression)
    except QueryError:
        raise
    except (TypeError, ValueError) as error:  # e.g. a string column compared with a number
        raise QueryError(f"--where {expression!r}: cannot evaluate it ({error})") from None
    if not isinstance(mask, pd.Series) or mask.dtype != bool:
        raise QueryError(f"--where {expression!r}: must be a condition, such as lr_d < 1e-3")
    return frame[mask]


def _evaluate(node: ast.AST, frame: pd.DataFrame, text: str) -> Any:
    def value(child: ast.AST) -> Any:
        return _evaluate(child, frame, text)

    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool):
        return node.value
    if isinstance(node, ast.Name):
        return _name(node.id, frame, text)
    if isinstance(node, ast.List | ast.Tuple):
        return [value(item) for item in node.elts]
    if isinstance(node, ast.BoolOp):
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        result = value(node.values[0])
        for other in node.values[1:]:
            result = combine(result, value(other))
        return result
    if isinstance(node, ast.UnaryOp):
        operand = value(node.operand)
        if isinstance(node.op, ast.Not | ast.Invert):
            return ~operand if isinstance(operand, pd.Series) else not operand
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
        return ARITHMETIC[type(node.op)](value(node.left), value(node.right))
    if isinstance(node, ast.Compare):
        return _compare(node, value)
    what = "function calls" if isinstance(node, ast.Call) else f"`{ast.unparse(node)}`"
    raise QueryError(
        f"--where {text!r}: {what} not allowed; use column names, numbers, strings, "
        "comparisons (== != < <= > >= in, not in), and, or, not"
    )


def _compare(node: ast.Compare, value) -> Any:
    result, left = None, value(node.left)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = value(right_node)
        if isinstance(op, ast.In | ast.NotIn):
            if not isinstance(left, pd.Series) or not isinstance(right, list):
                raise QueryError("`in` takes a column on the left and a list on the right")
            holds = left.isin(right)
            holds = ~holds if isinstance(op, ast.NotIn) else holds
        elif type(op) in COMPARE:
            holds = COMPARE[type(op)](left, right)
        else:
            raise QueryError(f"comparison `{ast.unparse(node)}` not allowed")
        result = holds if result is None else result & holds
        left = right
    return result


def _name(name: str, frame: pd.DataFrame, text: str) -> Any:
    if name in CONSTANTS:
        return CONSTANTS[name]
    if name not in frame.columns:
        raise QueryError(
            f"--where {text!r}: no column {name!r}; columns: {', '.join(map(str, frame.columns))}"
        )
    return frame[name]
