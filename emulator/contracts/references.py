"""``$ref`` resolution: local JSON pointers (``#/components/...``), and documents with every
reference replaced by its target (:func:`dereference`)."""

from __future__ import annotations

from typing import Any

from emulator.contracts.errors import ContractError


def resolve_pointer(document: Any, ref: str) -> Any:
    """The node a local ``$ref`` (``#/components/schemas/Id``) points at in ``document``.

    Raises:
        ContractError: a non-local or unresolvable ``$ref``.
    """
    if not ref.startswith("#/"):
        raise ContractError(f"only local $refs are supported, got {ref!r}")
    node = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ContractError(f"unresolvable $ref {ref!r}") from None
    return node


def dereference(document: Any) -> Any:
    """A copy of ``document`` with every local ``$ref`` replaced by its target.

    Sibling keys of a ``$ref`` (3.1 allows ``description`` beside it) are kept.

    Raises:
        ContractError: a non-local or unresolvable ``$ref``, or a cycle.
    """

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                if ref in seen:
                    raise ContractError(f"recursive $ref {ref!r}")
                target = walk(resolve_pointer(document, ref), (*seen, ref))
                rest = {k: walk(v, seen) for k, v in node.items() if k != "$ref"}
                return {**target, **rest} if isinstance(target, dict) and rest else target
            return {k: walk(v, seen) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, seen) for v in node]
        return node

    return walk(document, ())


__all__ = ["dereference", "resolve_pointer"]
