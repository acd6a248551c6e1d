"""Reading the suite's YAML documents (audit specs, standard profiles) safely: the safe
loader (nothing executes), duplicate keys refused (PyYAML silently keeps the last), and
the document's size bounded before it is constructed, so an alias bomb ("billion
laughs") is refused instead of filling memory."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from audit.errors import SpecError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

if getattr(yaml, "__with_libyaml__", False):
    class _FastUniqueKeyLoader(yaml.CSafeLoader):
        """The same loader on libyaml's parser: composing a large document is ~8x faster."""

    _FastUniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    _LOADER: type = _FastUniqueKeyLoader
else:  # pragma: no cover - PyYAML built without libyaml
    _LOADER = _UniqueKeyLoader


def yaml_path(loc: Iterable[Any]) -> str:
    """A location as written in YAML terms: ('checks', 3, 'thresholds') -> checks[3].thresholds."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top>"


def load_yaml(text: str, source: str, *, max_nodes: int, what: str = "the document",
              limit_var: str | None = None, aliases: bool = True) -> Any:
    """Safe YAML with duplicate keys refused, and the expanded size (aliases counted as
    often as they are used) bounded by `max_nodes` before anything is constructed.
    `aliases=False` refuses aliases outright (documents that never need them)."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, source, max_nodes, what, limit_var, aliases)
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}".replace("\n", " "), where=source) from None
    except RecursionError:
        raise SpecError("invalid YAML: nested too deeply", where=source) from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, source: str, max_nodes: int, what: str, limit_var: str | None,
                     aliases: bool) -> None:
    """Refuse a document whose tree, aliases expanded, has more than `max_nodes` nodes, or
    whose aliases loop (or any alias, without `aliases`). Iterative with a memo, so the
    check itself is linear in the composed graph and uses no recursion."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            if size[key] > max_nodes:
                var = f"; {limit_var}" if limit_var else ""
                raise SpecError(f"{what} expands to more than {max_nodes:,} YAML nodes (aliases counted "
                                f"each time they are used{var}): refused before loading it", where=source)
            continue
        if key in size:
            if not aliases:  # a node reached twice is an alias
                raise SpecError(f"invalid YAML: aliases (*name) are not allowed in {what}", where=source)
            continue
        if key in on_path:
            raise SpecError("invalid YAML: an alias refers to a node that contains it", where=source)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size or not aliases)
