"""Typed genes and the space: sampling, decoding, and one clear error per kind of bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metalab.errors import ConfigError, MetalabError
from metalab.search import CategoricalGene, FloatGene, IntGene, SearchSpace

CONFIG = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "layers": {"type": "int", "low": 1, "high": 4},
    "activation": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
}


def test_space_from_config_samples_inside_bounds_and_decodes():
    space = SearchSpace.from_config(CONFIG)
    genomes = space.sample(2000, np.random.default_rng(0))
    decoded = [space.decode(g) for g in genomes]
    lrs = np.array([d["lr"] for d in decoded])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
    assert abs(np.mean(np.log10(lrs)) - (-2.5)) < 0.05  # log-uniform: mean exponent is the midpoint
    assert {d["layers"] for d in decoded} == {1, 2, 3, 4}
    assert {d["activation"] for d in decoded} == {"relu", "tanh", "gelu"}
    assert genomes[0, 0] == pytest.approx(math.log(decoded[0]["lr"]))


@pytest.mark.parametrize(
    "config, message",
    [
        ({}, "search space is empty"),
        ({"x": {"type": "float", "low": 2.0, "high": 1.0}}, r"x.low=2.0 > x.high=1.0 is not allowed"),
        ({"x": {"type": "int", "low": 5, "high": 1}}, r"x.low=5 > x.high=1"),
        (
            {"x": {"type": "gaussian", "low": 0, "high": 1}},
            r"x.type='gaussian' is not allowed: .* float, int, categorical",
        ),
        ({"x": {"low": 0, "high": 1}}, r"x.type=None is not allowed"),
        ({"x": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log-scale gene needs low > 0"),
        ({"x": {"type": "categorical", "choices": []}}, "needs at least one choice"),
        (
            {"x": {"type": "float", "low": 0.0, "hgh": 1.0}},
            r"x: .*unexpected keyword.*keys of a float gene: low, high, log",
        ),
    ],
)
def test_bad_space_configs_raise_one_clear_error(config, message):
    with pytest.raises(ConfigError, match=message) as caught:
        SearchSpace.from_config(config)
    assert isinstance(caught.value, MetalabError)


def test_empty_gene_list_and_duplicate_names():
    with pytest.raises(ConfigError, match="search space is empty"):
        SearchSpace([])
    with pytest.raises(ConfigError, match="repeated: a"):
        SearchSpace([FloatGene("a", 0, 1), IntGene("a", 0, 3)])


def test_clip_rounds_discrete_genes():
    space = SearchSpace([FloatGene("f", 0, 1), IntGene("i", 0, 3), CategoricalGene("c", ("a", "b"))])
    clipped = space.clip(np.array([[1.7, 2.6, -3.0]]))
    assert clipped.tolist() == [[1.0, 3.0, 0.0]]
