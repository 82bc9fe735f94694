"""H2O's compressed trees, decoded into flat node tables and walked for all rows at once.

The byte layout and the walk are ``hex.genmodel.algos.tree.SharedTreeMojoModel.scoreTree``
(``ScoreTree2``, MOJO versions >= 1.2), little-endian (``ByteBufferWrapper``) — per node:

* ``nodeType`` (u8), ``colId`` (u16; 65535: the tree is a single leaf, a float32 follows);
* ``naSplitDir`` (u8, ``NaSplitDir``: 1 NAvsREST, 2 NALeft, 3 NARight, 4 Left, 5 Right);
* unless NAvsREST, the split: ``equal = nodeType & 12`` is 0 for a float32 threshold (right when
  ``x >= threshold``), 8 for a 32-bit inline bitset (``GenmodelBitSet.fill2``), 12 for a large
  bitset: u16 bit offset, i32 bit count, the bytes (``fill3``); right when the level is in the set;
* ``lmask = nodeType & 51``: 0..3: a (lmask+1)-byte size of the left subtree follows, then the left
  subtree, then the right one; 48: the left child is a leaf (float32) and the right one follows;
  ``(nodeType & 0xC0) >> 2 == 48``: the right child is a leaf (float32).

A row goes the NA way (right unless NALeft/Left) when its value is NaN, when the bitset in effect
does not cover its level (``GenmodelBitSet.isInRange``), or when its level is past the column's
domain; otherwise a NAvsREST node sends it left, a threshold node right when ``x >= t`` (``t``
widened from float32), a bitset node right when the level is in the set. "The bitset in effect" is
genmodel's one reused ``GenmodelBitSet``: the last bitset read on the row's path, which a NAvsREST
node leaves as it was.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from scorer.h2o_native.mojo import Unsupported

NSD_NA_VS_REST = 1
NSD_LEFTWARD = (2, 4)  # NALeft, Left
KIND_NUMERIC, KIND_BITSET, KIND_LEAF = 0, 1, 2
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


@dataclass
class Forest:
    """Every node of every tree in one table (leaves included: a leaf's children are itself)."""

    col: np.ndarray  # int64, feature index (0 for leaves)
    kind: np.ndarray  # KIND_*
    na_vs_rest: np.ndarray  # bool
    leftward: np.ndarray  # bool: NA goes left
    threshold: np.ndarray  # float64 (float32 widened)
    bits_start: np.ndarray  # int64 offset into ``bits`` of this node's bitset (-1: none)
    bit_offset: np.ndarray  # int64
    bit_count: np.ndarray  # int64
    left: np.ndarray  # int64 node index
    right: np.ndarray
    value: np.ndarray  # float64 leaf value (float32 widened)
    bits: np.ndarray  # uint8: every bitset's bytes
    roots: np.ndarray  # int64, one per tree
    depth: int  # the deepest path, in internal nodes


class _Builder:
    def __init__(self) -> None:
        self.rows: list[list[float | int | bool]] = []
        self.bits = bytearray()
        self.depth = 0

    def add(self, row: list[float | int | bool]) -> int:
        self.rows.append(row)
        return len(self.rows) - 1

    def leaf(self, value: float) -> int:
        index = self.add([0, KIND_LEAF, False, False, 0.0, -1, 0, 0, -1, -1, value])
        self.rows[index][8] = self.rows[index][9] = index
        return index

    def tree(self, tree: bytes, where: str) -> int:
        try:
            return self._node(tree, 0, 0, where)
        except (struct.error, IndexError) as exc:
            raise Unsupported(f"{where}: tree bytes not in the known layout ({exc})") from exc

    def _node(self, tree: bytes, pos: int, depth: int, where: str) -> int:
        node_type = tree[pos]
        (col,) = struct.unpack_from("<H", tree, pos + 1)
        if col == 65535:
            return self.leaf(struct.unpack_from("<f", tree, pos + 3)[0])
        self.depth = max(self.depth, depth + 1)
        nsd = tree[pos + 3]
        if nsd > 5:
            raise Unsupported(f"{where}: unknown NA split direction {nsd}")
        pos += 4
        lmask, equal, rmask = node_type & 51, node_type & 12, (node_type & 0xC0) >> 2
        if lmask not in (0, 1, 2, 3, 48) or rmask not in (0, 48) or equal == 4:
            raise Unsupported(f"{where}: unknown node type {node_type}")
        threshold, start, bitoff, nbits, kind = 0.0, -1, 0, 0, KIND_NUMERIC
        if nsd != NSD_NA_VS_REST:
            if equal == 0:
                (threshold,) = struct.unpack_from("<f", tree, pos)
                pos += 4
            else:
                kind = KIND_BITSET
                if equal == 8:  # GenmodelBitSet.fill2
                    nbytes, nbits = 4, 32
                else:  # GenmodelBitSet.fill3
                    bitoff, nbits = struct.unpack_from("<Hi", tree, pos)
                    pos += 6
                    nbytes = ((nbits - 1) >> 3) + 1
                start = len(self.bits)
                self.bits += tree[pos : pos + nbytes]
                if len(tree[pos : pos + nbytes]) != nbytes:
                    raise Unsupported(f"{where}: bitset past the end of the tree")
                pos += nbytes
        elif equal != 0:
            kind = KIND_BITSET  # a NAvsREST node of a categorical column: the bitset in effect applies
        index = self.add([col, kind, nsd == NSD_NA_VS_REST, nsd in NSD_LEFTWARD, threshold, start, bitoff, nbits,
                          -1, -1, 0.0])
        if lmask == 48:
            left = self.leaf(struct.unpack_from("<f", tree, pos)[0])
            right_pos = pos + 4
        else:
            size = int.from_bytes(tree[pos : pos + lmask + 1], "little", signed=lmask == 3)
            left = self._node(tree, pos + lmask + 1, depth + 1, where)
            right_pos = pos + lmask + 1 + size
        if rmask == 48:
            right = self.leaf(struct.unpack_from("<f", tree, right_pos)[0])
        else:
            right = self._node(tree, right_pos, depth + 1, where)
        self.rows[index][8], self.rows[index][9] = left, right
        return index


def build_forest(trees: list[bytes], where: str) -> Forest:
    """Decode ``trees`` (compressed, ``ScoreTree2`` layout) into one :class:`Forest`."""
    builder = _Builder()
    roots = [builder.tree(tree, f"{where} tree {i}") for i, tree in enumerate(trees)]
    table = builder.rows or [[0, KIND_LEAF, False, False, 0.0, -1, 0, 0, 0, 0, 0.0]]
    cols = list(zip(*table))
    return Forest(
        col=np.array(cols[0], dtype=np.int64), kind=np.array(cols[1], dtype=np.int8),
        na_vs_rest=np.array(cols[2], dtype=bool), leftward=np.array(cols[3], dtype=bool),
        threshold=np.array(cols[4], dtype=np.float32).astype(np.float64),
        bits_start=np.array(cols[5], dtype=np.int64), bit_offset=np.array(cols[6], dtype=np.int64),
        bit_count=np.array(cols[7], dtype=np.int64), left=np.array(cols[8], dtype=np.int64),
        right=np.array(cols[9], dtype=np.int64), value=np.array(cols[10], dtype=np.float32).astype(np.float64),
        bits=np.frombuffer(bytes(builder.bits) or b"\0", dtype=np.uint8), roots=np.array(roots, dtype=np.int64),
        depth=builder.depth,
    )


def java_d2i(values: np.ndarray) -> np.ndarray:
    """Java's ``(int) d``: toward zero, saturating at the int range, NaN to 0."""
    clean = np.where(np.isnan(values), 0.0, values)
    return np.trunc(np.clip(clean, INT_MIN, INT_MAX)).astype(np.int64)


def leaf_values(forest: Forest, x: np.ndarray, domain_sizes: np.ndarray) -> np.ndarray:
    """The leaf value (float64) each row of ``x`` (n, features) reaches in each tree: (n, trees).
    ``domain_sizes[c]`` is column c's number of levels, -1 for a numeric column."""
    n = x.shape[0]
    node = np.broadcast_to(forest.roots, (n, forest.roots.size)).copy()
    rows = np.broadcast_to(np.arange(n)[:, None], node.shape)
    bitset = np.full(node.shape, -1, dtype=np.int64)  # the row's GenmodelBitSet in effect: a node index
    for _ in range(forest.depth):
        kind = forest.kind[node]
        inner = kind != KIND_LEAF
        if not inner.any():
            break
        col = forest.col[node]
        d = x[rows, col]
        level = java_d2i(d)
        na_vs_rest = forest.na_vs_rest[node]
        own = (kind == KIND_BITSET) & ~na_vs_rest  # this node fills the bitset
        bitset = np.where(own, node, bitset)
        has_bits = (kind == KIND_BITSET) & (bitset >= 0)
        safe = np.maximum(bitset, 0)
        idx = level - forest.bit_offset[safe]
        in_range = (idx >= 0) & (idx < forest.bit_count[safe])
        size = domain_sizes[col]
        na = np.isnan(d) | (has_bits & ~in_range) | ((size >= 0) & (size <= level))
        byte = forest.bits[np.clip(forest.bits_start[safe] + (idx >> 3), 0, forest.bits.size - 1)]
        contains = ((byte.astype(np.int64) >> (idx & 7)) & 1) == 1
        split = np.where(kind == KIND_BITSET, in_range & contains, d >= forest.threshold[node])
        go_right = np.where(na, ~forest.leftward[node], ~na_vs_rest & split)
        node = np.where(inner, np.where(go_right, forest.right[node], forest.left[node]), node)
    values: np.ndarray = forest.value[node]
    return values
