"""A gradient-boosted tree ensemble evaluated in numpy, so the gateway needs no LightGBM.

The verifier's model is trained with LightGBM (benchmarks/train_cache_verifier.py) and exported
to flat arrays: one row per tree, one column per split node (padded), the way LightGBM's own model
file stores them. Children are node indices, or `~leaf` (negative) for a leaf. All trees are walked
in lock step, one level per step, so a batch of candidates costs `depth` vectorised gathers rather
than a Python loop over thousands of nodes (four candidates, 1,902 trees: about 1 ms).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Trees:
    """The ensemble as padded (trees, nodes) arrays; `logit` / `probability` take (rows, inputs)."""

    def __init__(
        self,
        feature: np.ndarray,  # (trees, nodes): the input column a split node tests
        threshold: np.ndarray,  # (trees, nodes): go left when x <= threshold
        left: np.ndarray,  # (trees, nodes): child node, or ~leaf
        right: np.ndarray,  # (trees, nodes)
        leaf: np.ndarray,  # (trees, leaves): the leaf's contribution to the logit
        depth: int,  # the deepest leaf: the most lock-step levels a walk needs
    ) -> None:
        self.feature, self.threshold = feature.astype(np.int64), threshold.astype(np.float64)
        self.left, self.right = left.astype(np.int64), right.astype(np.int64)
        self.leaf, self.depth = leaf.astype(np.float64), depth
        # The walk's own layout: each tree's split nodes, then its leaves as nodes that lead to
        # themselves, all numbered flat. Every walk then takes exactly `depth` steps with no
        # "already at a leaf?" bookkeeping, and every gather is a 1-D take (the fast kind).
        trees, nodes = feature.shape
        leaves = leaf.shape[1]
        width = nodes + leaves
        base = (np.arange(trees, dtype=np.int64) * width)[:, None]
        at_leaf = base + nodes + np.arange(leaves)

        def flat(child: np.ndarray) -> np.ndarray:
            return np.concatenate([np.where(child >= 0, child, nodes + ~child) + base, at_leaf], 1)

        self._feature = np.concatenate(
            [self.feature, np.zeros((trees, leaves), np.int64)], 1
        ).ravel()
        self._threshold = np.concatenate(
            [self.threshold, np.full((trees, leaves), np.inf)], 1
        ).ravel()
        self._left, self._right = flat(self.left).ravel(), flat(self.right).ravel()
        self._value = np.concatenate([np.zeros((trees, nodes)), self.leaf], 1).ravel()
        self._roots = base[:, 0]

    @classmethod
    def from_arrays(cls, w: dict[str, np.ndarray], prefix: str = "tree_") -> Trees:
        return cls(
            w[prefix + "feature"],
            w[prefix + "threshold"],
            w[prefix + "left"],
            w[prefix + "right"],
            w[prefix + "leaf"],
            int(w[prefix + "depth"]),
        )

    def to_arrays(self, prefix: str = "tree_") -> dict[str, np.ndarray]:
        return {
            prefix + "feature": self.feature.astype(np.int16),
            prefix + "threshold": self.threshold,
            prefix + "left": self.left.astype(np.int16),
            prefix + "right": self.right.astype(np.int16),
            prefix + "leaf": self.leaf,
            prefix + "depth": np.array(self.depth),
        }

    def logit(self, x: np.ndarray) -> np.ndarray:
        """Sum of the leaves each row of `x` (rows, inputs) reaches: the ensemble's raw score."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        values = x.ravel()
        row = (np.arange(len(x), dtype=np.int64) * x.shape[1])[:, None]
        node = np.broadcast_to(self._roots, (len(x), len(self._roots)))
        for _ in range(self.depth):
            go_left = values.take(self._feature.take(node) + row) <= self._threshold.take(node)
            node = np.where(go_left, self._left.take(node), self._right.take(node))
        return self._value.take(node).sum(axis=1)

    def probability(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(x), -30.0, 30.0)))


def from_lightgbm(dump: dict[str, Any]) -> Trees:
    """Flatten `Booster.dump_model()` (numerical `<=` splits only, the kind the verifier trains)."""
    trees = dump["tree_info"]
    nodes = max(max(t["num_leaves"] - 1, 1) for t in trees)
    leaves = max(t["num_leaves"] for t in trees)
    shape = (len(trees), nodes)
    feature = np.zeros(shape, np.int32)
    threshold = np.full(shape, np.inf)
    left = np.full(shape, -1, np.int32)  # a padding node sends everything to leaf 0
    right = np.full(shape, -1, np.int32)
    leaf = np.zeros((len(trees), leaves))
    depth = 1
    for t, info in enumerate(trees):
        stack: list[tuple[dict[str, Any], int]] = [(info["tree_structure"], 1)]
        while stack:
            node, level = stack.pop()
            if "leaf_value" in node:
                leaf[t, node.get("leaf_index", 0)] = node["leaf_value"]
                depth = max(depth, level - 1)  # splits above this leaf
                continue
            if node["decision_type"] != "<=" or node.get("missing_type", "None") == "Zero":
                raise ValueError(f"tree {t}: only numerical '<=' splits are supported")
            i = node["split_index"]
            feature[t, i] = node["split_feature"]
            threshold[t, i] = node["threshold"]
            for side, child in ((left, node["left_child"]), (right, node["right_child"])):
                side[t, i] = (
                    child["split_index"] if "split_index" in child else ~child["leaf_index"]
                )
                stack.append((child, level + 1))
    # a single-leaf tree has no split: its padding node 0 sends every row to its leaf 0
    return Trees(feature, threshold, left, right, leaf, depth)
