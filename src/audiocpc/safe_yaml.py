"""YAML loading with a bound on alias expansion, and short excerpts of values for messages.

`yaml.safe_load` never runs code, but anchors and aliases let a few hundred bytes describe
a tree of 10**12 values (the "billion laughs"): PyYAML shares the repeated parts, and
whatever walks the result (validation, an error message's repr, a YAML dump) expands it.
`load_yaml` counts the nodes the document would have once every alias is expanded, without
expanding it, and refuses documents over `MAX_EXPANDED_NODES` or with an alias that
contains itself.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from audiocpc.errors import short_repr  # noqa: F401 - re-exported for messages

# A configuration has a few hundred values; a hundred thousand leaves room for long lists
# (class names, step weights) while a bomb is refused at once.
MAX_EXPANDED_NODES = 100_000


class YAMLExpansionError(yaml.YAMLError):
    """A document whose aliases expand beyond the bound, or refer to themselves."""


def expanded_size(root: Node, limit: int = MAX_EXPANDED_NODES) -> int:
    """Nodes in the tree under `root` with every alias expanded, counted once per distinct
    node (memoised), so the count itself costs time linear in the document's text."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: Node) -> int:
        ident = id(node)
        if ident in sizes:
            return sizes[ident]
        if ident in in_progress:
            raise YAMLExpansionError("an alias refers to the node that contains it "
                                     "(a recursive anchor); write the values out instead")
        in_progress.add(ident)
        total = 1
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                raise YAMLExpansionError(
                    f"aliases expand this document to more than {limit:,} values (an alias "
                    "bomb?); write the settings out without nested anchors and aliases")
        in_progress.discard(ident)
        sizes[ident] = total
        return total

    return size(root)


class BoundedSafeLoader(yaml.SafeLoader):
    """The safe loader, refusing documents that expand beyond MAX_EXPANDED_NODES."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            expanded_size(node)
        return node


def load_yaml(text: str) -> Any:
    """Like yaml.safe_load (plain data only, no tags that run code), with the expansion bound.
    Raises a yaml.YAMLError (YAMLExpansionError for a bomb) for text that cannot be used."""
    return yaml.load(text, Loader=BoundedSafeLoader)  # noqa: S506 - a SafeLoader subclass
