"""The verifier's tree ensemble walked in numpy must be LightGBM's model, to float rounding."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from gateway.cache.trees import Trees, from_lightgbm
from gateway.cache.verifier import FEATURE_NAMES, Verifier

# one tree: x0 <= 0.5 ? (x1 <= 2 ? leaf 0 : leaf 1) : leaf 2; a second, single-leaf tree
DUMP = {
    "tree_info": [
        {
            "num_leaves": 3,
            "tree_structure": {
                "split_index": 0,
                "split_feature": 0,
                "threshold": 0.5,
                "decision_type": "<=",
                "left_child": {
                    "split_index": 1,
                    "split_feature": 1,
                    "threshold": 2.0,
                    "decision_type": "<=",
                    "left_child": {"leaf_index": 0, "leaf_value": -1.0},
                    "right_child": {"leaf_index": 1, "leaf_value": 0.25},
                },
                "right_child": {"leaf_index": 2, "leaf_value": 2.0},
            },
        },
        {"num_leaves": 1, "tree_structure": {"leaf_value": 0.5}},
    ]
}


def test_walks_each_path_and_ties_go_left() -> None:
    trees = from_lightgbm(DUMP)
    x = np.array([[0.0, 0.0], [0.5, 2.0], [0.0, 3.0], [0.6, 0.0], [9.0, 9.0]])
    assert trees.logit(x).tolist() == [-0.5, -0.5, 0.75, 2.5, 2.5]
    assert trees.depth == 2
    again = Trees.from_arrays(trees.to_arrays())  # what the weights file stores
    assert np.array_equal(again.logit(x), trees.logit(x))


def test_matches_lightgbm_predictions() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 12))
    y = ((x[:, 0] * x[:, 1] + np.sin(3 * x[:, 2]) + 0.3 * rng.normal(size=3000)) > 0).astype(float)
    params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.1, "verbose": -1}
    booster = lgb.train(params | {"num_threads": 1, "seed": 0}, lgb.Dataset(x, y), 120)
    trees = from_lightgbm(booster.dump_model())
    probe = rng.normal(size=(500, 12))
    assert np.abs(trees.probability(probe) - booster.predict(probe)).max() < 1e-9


def test_shipped_verifier_reads_features_and_summed_vectors() -> None:
    verifier = Verifier.load()
    assert 0.5 < verifier.operating_point < 1
    assert verifier.trees.feature.max() < len(FEATURE_NAMES) + 384
