"""Reading a configuration file's YAML with bounded work, strict keys and line numbers.

A configuration is small and written by people; a file that is not (an alias bomb, a 10 MB scalar,
thousands of nested brackets, a binary pasted into a ConfigMap) must be refused quickly, with one
readable line, and never take the process's memory with it. So the text goes through four steps,
each bounded before the next one can cost anything:

1. size: at most `MAX_BYTES` characters;
2. events (libyaml's parser, iterative): nesting depth, scalar length, the number of values and of
   documents are checked while streaming, before any tree exists (composing costs about 600 bytes
   per value: the count bounds the memory of the next step);
3. nodes: the composed graph is walked once with memoised sizes, so the size the aliases expand to
   is known without expanding them (a 1 KB "billion laughs" expands to 10^9 nodes: refused here);
   an alias inside its own anchor (a cycle) is refused too;
4. values: plain Python data built from the nodes (aliases stay shared objects), with every
   mapping key's line recorded under its YAML path (`profiles[1].ciphlist`) and every key given
   twice in one mapping reported with both lines. A duplicate key is an error, not "the last one
   wins": for a security proxy a repeated `verify:` that silently turns verification off is the
   most dangerous kind of typo.

Pure: no logging, no files; the caller reads the text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Issue, bounded

MAX_BYTES = 2 * 1024 * 1024  # a configuration with 10,000 partners is about 1 MB
MAX_DEPTH = 24  # the schema nests 4 deep; room for flow style and anchors
MAX_SCALAR = 64 * 1024  # no value of the schema is near that; PEM material lives in files
MAX_NODES = 150_000  # values, before and after alias expansion; 10,000 partners of 4 keys are 100,000

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it


class YamlRefused(Exception):
    """The text cannot be read as a configuration; `issue` says why, in one line."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(str(issue))
        self.issue = issue


@dataclass(frozen=True, slots=True)
class YamlDocument:
    data: Any  # None for an empty document
    lines: dict[str, int] = field(default_factory=dict)  # YAML path -> line (from 1) where it is written
    issues: tuple[Issue, ...] = ()  # duplicate keys: the data is still usable to find other problems


def read_yaml(text: str, name: str) -> YamlDocument:
    """Parse `text` (the file `name`) with bounded work; raise YamlRefused when it cannot be used."""
    if len(text) > MAX_BYTES:
        raise YamlRefused(
            Issue(name, f"the file is {len(text):,} characters long; a configuration is at most {MAX_BYTES:,}")
        )
    try:
        _check_events(text, name)
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise YamlRefused(_syntax_issue(exc, name)) from None
    if root is None:
        return YamlDocument(None)
    _check_expansion(root, name)
    loader = _Loader("")
    try:
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:  # a bad timestamp, an unknown tag such as !!python/object
        raise YamlRefused(_syntax_issue(exc, name)) from None
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:  # e.g. an unhashable merge key
        raise YamlRefused(Issue(name, f"invalid YAML: {bounded(str(exc), 120)}")) from None
    finally:
        loader.dispose()
    lines: dict[str, int] = {"": root.start_mark.line + 1}
    issues: list[Issue] = []
    _walk(root, "", lines, issues, set())
    return YamlDocument(data, lines, tuple(issues))


def _syntax_issue(exc: yaml.YAMLError, name: str) -> Issue:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    context = getattr(exc, "context", None)
    text = f"{context}: {problem}" if context else str(problem)
    if mark is not None:
        return Issue(f"{name}:{mark.line + 1}", f"invalid YAML: {bounded(text, 200)}")
    return Issue(name, f"invalid YAML: {bounded(text, 200)}")


def _check_events(text: str, name: str) -> None:
    depth = 0
    documents = 0
    values = 0
    for event in yaml.parse(text, Loader=_Loader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            values += 1
            if values > MAX_NODES:
                raise YamlRefused(Issue(f"{name}:{line}", f"holds more than {MAX_NODES:,} values"))
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlRefused(Issue(f"{name}:{line}", f"nested more than {MAX_DEPTH} levels deep"))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.ScalarEvent):
            if len(event.value) > MAX_SCALAR:
                raise YamlRefused(
                    Issue(f"{name}:{line}", f"a value of {len(event.value):,} characters (at most {MAX_SCALAR:,})")
                )
        elif isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise YamlRefused(Issue(f"{name}:{line}", "a second YAML document: a configuration is one document"))


class _TooBig(Exception):
    pass


def _check_expansion(root: yaml.Node, name: str) -> None:
    """Refuse a graph whose aliases expand past MAX_NODES or MAX_DEPTH, or that contains a cycle."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
    active: set[int] = set()

    def visit(node: yaml.Node, level: int) -> tuple[int, int]:
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            if level + known[1] > MAX_DEPTH:
                raise _TooBig(f"nested more than {MAX_DEPTH} levels deep once its aliases are expanded")
            return known
        if key in active:
            raise _TooBig("an alias refers to the node that contains it (a recursive structure)")
        if level > MAX_DEPTH:
            raise _TooBig(f"nested more than {MAX_DEPTH} levels deep once its aliases are expanded")
        active.add(key)
        size, height = 1, 0
        for child in _children(node):
            child_size, child_height = visit(child, level + 1)
            size += child_size
            height = max(height, child_height + 1)
            if size > MAX_NODES:
                raise _TooBig(f"its aliases expand to more than {MAX_NODES:,} values (an alias bomb?)")
        active.discard(key)
        sizes[key] = (size, height)
        return size, height

    try:
        visit(root, 1)
    except _TooBig as exc:
        raise YamlRefused(Issue(name, f"refused: {exc}")) from None


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _key_text(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    return "?"


def _walk(node: yaml.Node, path: str, lines: dict[str, int], issues: list[Issue], checked: set[int]) -> None:
    """Record the line of every path; report duplicate keys (each mapping node once, even when aliased)."""
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            item_path = f"{path}[{index}]"
            lines.setdefault(item_path, item.start_mark.line + 1)
            _walk(item, item_path, lines, issues, checked)
    elif isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        reported: set[tuple[str, str]] = set()
        report = id(node) not in checked
        checked.add(id(node))
        for key, value in node.value:
            text = _key_text(key)
            key_path = f"{path}.{text}" if path else text
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode) and text != "<<":
                seen = first_line.get((key.tag, text))
                if seen is not None:
                    if report and (key.tag, text) not in reported:
                        reported.add((key.tag, text))  # once per key: a third copy adds nothing
                        issues.append(Issue(key_path, f"given twice (lines {seen} and {line}): keep one", line=0))
                    continue
                first_line[(key.tag, text)] = line
            lines.setdefault(key_path, line)
            _walk(value, key_path, lines, issues, checked)


def line_of(path: str, lines: Mapping[str, int]) -> int | None:
    """The line of `path`, or of its nearest written parent (a missing key: its mapping's line)."""
    while path:
        found = lines.get(path)
        if found is not None:
            return found
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            return lines.get(path[:cut]) if cut == 0 else None
        path = path[:cut]
    return None
