"""`ganlab results --where`: a restricted expression over a table's columns, never code.

The expression is parsed with Python's grammar and evaluated here, node by node, on the table's
columns: names are columns (or True, False, None), constants are numbers and strings, and the
operators are comparisons (`==`, `<`, `in`, ...), `and`, `or`, `not`, `&`, `|`, `~` and
arithmetic. Function calls, attributes, subscripts, `@variables` and everything else are
refused, so a `--where` cannot run anything. Nor can it take the machine's memory or stack: an
expression is at most MAX_CHARS long and MAX_DEPTH deep (Python's parser and this evaluator
recurse), and `*` multiplies numbers only (`'a' * 300000000` would build a string of that size;
numbers cannot grow past what the expression's length allows).
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
MAX_CHARS = 10_000  # a condition on a few columns takes a hundred; a list of values, thousands
MAX_DEPTH = 50  # nested operators: far below the interpreter's recursion limit (1,000)


class QueryError(BadInput):
    """A `--where` expression that is not allowed or names no column."""


def select(frame: pd.DataFrame, expression: str) -> pd.DataFrame:
    """The rows of `frame` where `expression` holds."""
    shown = expression if len(expression) <= 200 else f"{expression[:200]}..."
    if len(expression) > MAX_CHARS:
        raise QueryError(f"--where {shown!r}: {len(expression):,} characters; at most "
                         f"{MAX_CHARS:,}")  # fmt: skip
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise QueryError(f"--where {shown!r}: not an expression ({error.msg})") from None
    except (RecursionError, MemoryError):  # the parser's own stack: nesting deeper than ours
        raise QueryError(f"--where {shown!r}: nested more than {MAX_DEPTH} deep") from None
    if _depth(tree.body) > MAX_DEPTH:
        raise QueryError(f"--where {shown!r}: nested more than {MAX_DEPTH} deep")
    try:
        mask = _evaluate(tree.body, frame, expression)
    except QueryError:
        raise
    except (TypeError, ValueError) as error:  # e.g. a string column compared with a number
        raise QueryError(f"--where {expression!r}: cannot evaluate it ({error})") from None
    if not isinstance(mask, pd.Series) or mask.dtype != bool:
        raise QueryError(f"--where {expression!r}: must be a condition, such as lr_d < 1e-3")
    return frame[mask]


def _depth(root: ast.AST) -> int:
    """How deep `root`'s tree is, counted without recursion."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack += [(child, depth + 1) for child in ast.iter_child_nodes(node)]
    return deepest


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
        left, right = value(node.left), value(node.right)
        if isinstance(node.op, ast.Mult) and not (_numeric(left) and _numeric(right)):
            raise QueryError(f"--where {text!r}: `*` multiplies numbers and numeric columns "
                             f"only, not `{ast.unparse(node)}`")  # fmt: skip
        return ARITHMETIC[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        return _compare(node, value)
    what = "function calls" if isinstance(node, ast.Call) else f"`{ast.unparse(node)}`"
    raise QueryError(
        f"--where {text!r}: {what} not allowed; use column names, numbers, strings, "
        "comparisons (== != < <= > >= in, not in), and, or, not"
    )


def _numeric(operand: Any) -> bool:
    """A number or a numeric column: what `*` may take (repeating a string or list, even a
    column of strings, would build one as large as the other operand says)."""
    if isinstance(operand, pd.Series):
        return pd.api.types.is_numeric_dtype(operand.dtype)
    return isinstance(operand, int | float)


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
