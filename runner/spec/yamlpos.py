"""YAML with positions: SafeLoader data plus the node tree that knows lines and columns.

The spec is read once with `yaml.SafeLoader` (no Python object tags), keeping the
composed node tree so that a validation error's key path (pydantic's `loc`) can be
mapped back to `line:col`, down to the character inside a formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from runner.spec.errors import SpecError, SpecIssue
from runner.spec.limits import MAX_DEPTH, MAX_STRING

MAX_NODES = 200_000  # guard against alias bombs (`&a [*a, *a, ...]`) before pydantic walks them
STR_TAG = "tag:yaml.org,2002:str"


@dataclass
class Step:
    """One matched segment of a key path: the key node (in a mapping) and the value node."""

    key: yaml.Node | None
    value: yaml.Node


class NodeLocator:
    """Maps key paths of the loaded spec to 1-based (line, col) in the file."""

    def __init__(self, root: yaml.Node | None, text: str):
        self.root = root
        self.text = text

    def walk(self, loc: tuple[Any, ...]) -> tuple[list[Step], list[Any]]:
        """Follow `loc` as far as the node tree goes; return matched steps and the rest."""
        steps: list[Step] = []
        node = self.root
        if node is None:
            return steps, list(loc)
        for i, seg in enumerate(loc):
            nxt: Step | None = None
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(seg):
                        nxt = Step(key_node, value_node)  # last duplicate wins, as in the loaded data
            elif isinstance(node, yaml.SequenceNode) and isinstance(seg, int) and 0 <= seg < len(node.value):
                nxt = Step(None, node.value[seg])
            if nxt is None:
                return steps, list(loc[i:])
            steps.append(nxt)
            node = nxt.value
        return steps, []

    def node_at(self, loc: tuple[Any, ...]) -> yaml.Node | None:
        """The value node at `loc`, or None when the path is not in the file."""
        steps, rest = self.walk(loc)
        if rest:
            return None
        return steps[-1].value if steps else self.root

    def position(self, loc: tuple[Any, ...], *, at_key: bool = False) -> tuple[int | None, int | None]:
        """Line and column of the deepest node on `loc`.

        A scalar value points at itself; a mapping or sequence value, or `at_key`,
        points at its key (the line where a reader sees the name).
        """
        steps, rest = self.walk(loc)
        if not steps:
            if self.root is None:
                return None, None
            return self.root.start_mark.line + 1, self.root.start_mark.column + 1
        last = steps[-1]
        node = last.value
        use_key = last.key is not None and (at_key or rest or not isinstance(node, yaml.ScalarNode))
        mark = last.key.start_mark if use_key else node.start_mark  # type: ignore[union-attr]
        return mark.line + 1, mark.column + 1

    def char_position(self, loc: tuple[Any, ...], offset: int) -> tuple[int | None, int | None]:
        """Line and column of character `offset` of the scalar string at `loc`.

        The scalar's source text is aligned with its value on non-blank characters, which
        handles plain, quoted and block (`|`, `>`) scalars alike.
        """
        node = self.node_at(loc)
        if not isinstance(node, yaml.ScalarNode) or node.start_mark.index is None:
            return self.position(loc)
        value: str = node.value
        raw = self.text[node.start_mark.index:node.end_mark.index]
        j = 0
        if node.style in ("|", ">"):
            j = raw.find("\n") + 1 if "\n" in raw else 0  # skip the block indicator line
        elif node.style in ("'", '"'):
            j = 1
        offset = max(0, min(offset, len(value)))
        target = j
        for ch in value[:offset]:
            if ch.isspace():
                continue
            found = raw.find(ch, j)
            if found < 0:
                break
            j = found + 1
            target = j
        # point at the offending character itself: skip blanks in the source after the last match
        if offset < len(value):
            while target < len(raw) and raw[target].isspace() and not value[offset].isspace():
                target += 1
        index = node.start_mark.index + min(target, len(raw))
        line = self.text.count("\n", 0, index)
        col = index - (self.text.rfind("\n", 0, index) + 1)
        return line + 1, col + 1


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Number of nodes once aliases are expanded, computed without expanding them."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # cycles count once
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[key] = min(size, MAX_NODES + 1)
    return memo[key]


def _duplicate_keys(node: yaml.Node, file: str, out: list[SpecIssue], path: tuple[str, ...] = ()) -> None:
    """YAML silently keeps the last of duplicate keys; a spec must not."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            name = str(key_node.value)
            if name in seen and isinstance(key_node, yaml.ScalarNode):
                mark = key_node.start_mark
                out.append(SpecIssue(file, mark.line + 1, mark.column + 1, ".".join((*path, name)),
                                     "duplicate key (YAML keeps only the last one)"))
            seen.add(name)
            _duplicate_keys(value_node, file, out, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            _duplicate_keys(child, file, out, (*path, str(i)))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _at(file: str, node: yaml.Node, message: str) -> SpecIssue:
    return SpecIssue(file, node.start_mark.line + 1, node.start_mark.column + 1, "", message)


def _shape_issues(root: yaml.Node, file: str) -> list[SpecIssue]:
    """Nesting depth (aliases followed), recursive aliases and over-long strings, found
    without recursion, before anything recursive (constructor, pydantic) walks the tree."""
    issues: list[SpecIssue] = []
    height: dict[int, int] = {}  # finished nodes: levels below and including them
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, level, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            height[key] = 1 + max((height.get(id(c), 0) for c in _children(node)), default=0)
            continue
        if key in on_path:
            return [_at(file, node, "a YAML alias refers to a node that contains it (a recursive structure)")]
        if key in height:
            if level - 1 + height[key] > MAX_DEPTH:
                return [_at(file, node, f"YAML nested more than {MAX_DEPTH} levels deep (the limit) through an alias")]
            continue
        if level > MAX_DEPTH:
            return [_at(file, node, f"YAML nested more than {MAX_DEPTH} levels deep (the limit)")]
        if isinstance(node, yaml.ScalarNode):
            if len(node.value) > MAX_STRING:
                issues.append(_at(file, node, f"a string of {len(node.value):,} characters; the limit is "
                                  f"{MAX_STRING:,}"))
            height[key] = 1
            continue
        on_path.add(key)
        stack.append((node, level, True))
        stack.extend((c, level + 1, False) for c in reversed(_children(node)))
    return issues


def _too_deep(text: str, file: str) -> SpecIssue:
    """Where the nesting passes the limit, found from the parser's events (not recursive)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
                    return SpecIssue(file, line, col, "",
                                     f"YAML nested more than {MAX_DEPTH} levels deep (the limit)")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        pass
    return SpecIssue(file, None, None, "", f"YAML nested more than {MAX_DEPTH} levels deep (the limit)")


def _reader_issue(exc: yaml.reader.ReaderError, text: str, file: str) -> SpecIssue:
    """A character YAML does not allow (NUL, other control characters), with its line and column."""
    index = int(exc.position) if isinstance(exc.position, int) else 0
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    what = "a NUL byte" if char == "\0" else f"the non-printable character U+{ord(char):04X}"
    return SpecIssue(file, line, col, "", f"{what} is not allowed in a spec (YAML text only)")


#: Mappings whose keys are model names, and places whose values name models: plain
#: scalars there stay text (a model named `yes`, `no`, `on`, `off`, `null`, `true`, `1`).
_NAME_KEYS = (("models",), ("variants",), ("expect", "fixed"), ("expect", "delta_aic"))
_NAME_VALUES = (("variants", "*", "from"), ("compare", "tests", "*", "*"), ("compare", "tests", "*", "models", "*"),
                ("expect", "best"),
                ("expect", "converged", "*"), ("expect", "singular", "*"))


def _select(node: yaml.Node, path: tuple[str, ...]) -> list[yaml.Node]:
    """Nodes at `path` under `node`; `*` is every value of a mapping or item of a sequence."""
    nodes = [node]
    for seg in path:
        nxt: list[yaml.Node] = []
        for n in nodes:
            if isinstance(n, yaml.MappingNode):
                nxt += [v for k, v in n.value if seg == "*" or (isinstance(k, yaml.ScalarNode) and k.value == seg)]
            elif isinstance(n, yaml.SequenceNode) and seg == "*":
                nxt += list(n.value)
        nodes = nxt
    return nodes


def _as_text(node: yaml.Node) -> None:
    if isinstance(node, yaml.ScalarNode) and node.style is None:
        node.tag = STR_TAG


def names_as_text(root: yaml.Node) -> None:
    """Keep model names as text where YAML 1.1 would resolve them to booleans, null or numbers."""
    for path in _NAME_KEYS:
        for mapping in _select(root, path):
            if isinstance(mapping, yaml.MappingNode):
                for key_node, _ in mapping.value:
                    _as_text(key_node)
    for value_path in _NAME_VALUES:
        for value in _select(root, value_path):
            _as_text(value)


def parse_yaml(text: str, file: str) -> tuple[Any, NodeLocator, list[SpecIssue]]:
    """SafeLoader data, its locator and structural issues (duplicate keys); SpecError on bad YAML."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise SpecError([_reader_issue(exc, text, file)]) from None
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise SpecError([_too_deep(text, file)]) from None
        if root is not None:
            shape = _shape_issues(root, file)
            if shape:
                raise SpecError(shape)
            if _expanded_size(root, {}) > MAX_NODES:
                raise SpecError([SpecIssue(file, None, None, "", f"spec too large (more than {MAX_NODES} "
                                           "YAML nodes once aliases are expanded)")])
            names_as_text(root)
        data = loader.construct_document(root) if root is not None else None
    except yaml.reader.ReaderError as exc:
        raise SpecError([_reader_issue(exc, text, file)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        reason = " ".join(x for x in (exc.context, exc.problem) if x)
        raise SpecError([SpecIssue(file, line, col, "", f"invalid YAML: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecIssue(file, None, None, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    issues: list[SpecIssue] = []
    if root is not None:
        _duplicate_keys(root, file, issues)
    return data, NodeLocator(root, text), issues
