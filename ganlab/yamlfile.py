"""YAML as people write it, without the parts that silently mislead.

`1e-4` is a float (PyYAML alone reads it as a string). Refused, each naming the field and line:
a key given twice in one mapping (PyYAML keeps the last one), a number that is not finite
(`.inf`, `.nan`, `1e999`), an integer of more than MAX_INT_DIGITS digits (Python refuses to read
one of over 4,300, and no field wants one of 100), and aliases that expand to more values than
any sweep file holds (an alias bomb expands to billions and would hang whatever walks it).
"""

import math
import re
from typing import Any

import yaml

MAX_VALUES = 100_000  # values once aliases are expanded; real sweep files hold hundreds
MAX_INT_DIGITS = 100  # the largest value any field takes, a seed below 2**63, has 19
FLOAT_TAG = "tag:yaml.org,2002:float"
INT_TAG = "tag:yaml.org,2002:int"
MERGE_TAG = "tag:yaml.org,2002:merge"


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads `1e-4` as a float."""


Loader.add_implicit_resolver(
    FLOAT_TAG,
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class YamlError(ValueError):
    """Valid YAML that a sweep or trial file may not hold; `field` is where (`search.lr_g`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message

    def __reduce__(self):  # pickles from both arguments
        return type(self), (self.field, self.message)


def read_yaml(text: str) -> Any:
    """Parse `text`; raises yaml.YAMLError for bad syntax and YamlError for what is refused."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node, loader)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check(root: yaml.Node, loader: Loader) -> None:
    """Walk the document as it will be constructed (aliases expanded), at most MAX_VALUES."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    visited = 0
    while stack:
        node, where = stack.pop()
        visited += 1
        if visited > MAX_VALUES:
            raise YamlError("file", f"more than {MAX_VALUES:,} values once its aliases (*name) "
                            "are expanded; a sweep file needs far fewer")  # fmt: skip
        if isinstance(node, yaml.MappingNode):
            _check_keys(node, where)
            for key, value in node.value:  # keys too: an integer key is read like a value
                stack += [(key, where), (value, _join(where, str(key.value)))]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
        elif node.tag == FLOAT_TAG and not math.isfinite(loader.construct_yaml_float(node)):
            raise YamlError(where or "file", f"{node.value} at {_at(node.start_mark)} is not a "
                            "finite number; give a finite value")  # fmt: skip
        elif node.tag == INT_TAG and len(node.value) > MAX_INT_DIGITS:
            raise YamlError(where or "file", f"an integer of {len(node.value):,} characters at "
                            f"{_at(node.start_mark)}; no field takes one of more than "
                            f"{MAX_INT_DIGITS}")  # fmt: skip


def _check_keys(node: yaml.MappingNode, where: str) -> None:
    seen: dict[tuple[str, str], yaml.Mark] = {}
    for key, _ in node.value:
        if key.tag == MERGE_TAG or not isinstance(key, yaml.ScalarNode):
            continue
        first = seen.setdefault((key.tag, key.value), key.start_mark)
        if first is not key.start_mark:
            raise YamlError(_join(where, key.value), f"key {key.value!r} is given twice, at "
                            f"{_at(first)} and {_at(key.start_mark)}; keep one")  # fmt: skip


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)
