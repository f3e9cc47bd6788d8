"""Which node should renew which MD: rendezvous (highest random weight) hashing. Pure.

Every node computes the same ranking from the MD's name and the live nodes' names, with
nothing to agree on: each MD has one preferred node, a node that joins or leaves moves
only its own share, and the locks (coord) still decide who actually renews.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")


def weight(node: str, md: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{node}\0{md}".encode(), digest_size=8).digest(),
                          "big")


def preferred(md: str, nodes: Iterable[str]) -> str:
    return max(nodes, key=lambda n: (weight(n, md), n))


def order(items: Iterable[T], node: str, nodes: list[str], key: Callable[[T], str]) -> list[T]:
    """`items` with those that prefer `node` first, then the others; within each part the
    order they came in (the plan's, most urgent first)."""
    items = list(items)
    own = [i for i in items if preferred(key(i), nodes) == node]
    return own + [i for i in items if preferred(key(i), nodes) != node]
