"""The preseed file: YAML in, a validated InitPlan out, or every problem at once.

Errors point at the file, line and key ("init.yaml:7: storage.disks[0]: /dev/sdz: no such
disk"), and all checks run before anything changes. The schema is InitPlan (api/init.py),
documented in doc/preseed.md; sizes may be written as "20GiB".
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import yaml

from microcloudd.api.errors import InvalidArgument
from microcloudd.api.init import InitPlan
from microcloudd.init import checks

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.I)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (write e.g. 20GiB or 500MB)")
    unit = (m.group(2) or "").upper()
    base = 1024 if "I" in unit else 1000
    power = "BKMGT".index(unit[0]) if unit else 0
    return int(float(m.group(1)) * base**power)


class Problems:
    """Collects problems with their line numbers; raises them all at once."""

    def __init__(self, source: str) -> None:
        self.source, self.items = source, list[tuple[int, str, str]]()
        self.lines: dict[str, int] = {}  # key path -> line, for checks after typing

    def add(self, line: int, key: str, message: str) -> None:
        self.items.append((line, key, message))

    def at(self, key: str, message: str) -> None:
        line = self.lines.get(key)
        while line is None and key:  # a key not in the file: point at its nearest parent
            key = key.rsplit(".", 1)[0] if "." in key else ""
            line = self.lines.get(key)
        self.add(line or 0, key, message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        lines = [f"{self.source}:{ln}: {key + ': ' if key else ''}{msg}" if ln else
                 f"{self.source}: {key + ': ' if key else ''}{msg}" for ln, key, msg in sorted(self.items)]
        raise InvalidArgument("Invalid init plan:\n  " + "\n  ".join(lines),
                              problems=[{"line": ln, "key": k, "message": m} for ln, k, m in self.items])


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "a mapping"
    return {str: "a string", int: "an integer", bool: "true or false"}.get(tp, str(tp))


def _convert(node: yaml.Node, tp: Any, key: str, p: Problems) -> Any:
    """The value of `node` as `tp`, recording problems (None where one was found)."""
    line = node.start_mark.line + 1
    p.lines.setdefault(key, line)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return None
        return _convert(node, args[0], key, p)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if not isinstance(node, yaml.MappingNode):
            p.add(line, key, "expected a mapping")
            return None
        fields = {f.encode_name: f for f in msgspec.structs.fields(tp)}
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            name = str(knode.value)
            sub = f"{key}.{name}" if key else name
            if name not in fields:
                p.add(knode.start_mark.line + 1, sub, f"unknown key (known: {', '.join(fields)})")
                continue
            p.lines[sub] = knode.start_mark.line + 1
            out[name] = _convert(vnode, fields[name].type, sub, p)
        for name, f in fields.items():
            if f.required and name not in out:
                p.add(line, f"{key}.{name}" if key else name, "missing required key")
        return out
    if origin is list:
        if not isinstance(node, yaml.SequenceNode):
            p.add(line, key, "expected a list")
            return None
        (item_tp,) = typing.get_args(tp)
        return [_convert(n, item_tp, f"{key}[{i}]", p) for i, n in enumerate(node.value)]
    if not isinstance(node, yaml.ScalarNode):
        p.add(line, key, f"expected {_type_name(tp)}")
        return None
    tag = node.tag.rsplit(":", 1)[-1]
    if tp is str:
        if tag in ("str", "int", "float"):  # "member: 1" means the name "1"
            return str(node.value)
    elif tp is bool and tag == "bool":
        return node.value.lower() in ("true", "yes", "on")
    elif tp is int:
        if tag == "int":
            return int(node.value, 0)
        if tag == "str" and key.endswith("size"):
            try:
                return parse_size(node.value)
            except ValueError as e:
                p.add(line, key, str(e))
                return None
    p.add(line, key, f"expected {_type_name(tp)}, got {node.value!r}")
    return None


def parse(text: str, source: str = "preseed", *, default_member: str = "",
          check_machine: bool = True) -> InitPlan:
    """Validate a preseed YAML text into an InitPlan, or raise InvalidArgument listing every
    problem with its line and key. Nothing is changed either way. Without `check_machine`,
    only the form is checked (an interrupted init's own plan: its disks now hold OSDs, its
    uplink interface has moved into the namespace)."""
    p = Problems(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        p.add(mark.line + 1 if mark else 0, "", f"not valid YAML: {getattr(e, 'problem', e)}")
        p.raise_if_any()
        raise AssertionError("unreachable") from e
    if root is None:
        root = yaml.MappingNode("tag:yaml.org,2002:map", [])
    data = _convert(root, InitPlan, "", p) or {}
    if default_member and "member" not in data:
        p.items = [it for it in p.items if it[1] != "member"]
        data["member"] = default_member
    # The checks against this machine run on what is well-formed, so one report lists all.
    try:
        plan = msgspec.convert(_prune(data), InitPlan)
    except msgspec.ValidationError:
        p.raise_if_any()
        raise
    if check_machine:
        checks.check_plan(plan, p)
    p.raise_if_any()
    return plan


def _prune(value: Any) -> Any:
    """Drop the values that failed to convert (None), so the rest can still be checked."""
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value if v is not None]
    return value


def parse_file(path: Path, *, default_member: str = "") -> InitPlan:
    return parse(Path(path).read_text(), str(path), default_member=default_member)
