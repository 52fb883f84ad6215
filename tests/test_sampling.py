"""Sampling: greedy decoding, temperature, top-k, several streams at once."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn.inference import sampling
from charrnn.model import network
from charrnn.config import ModelConfig, SampleConfig
from charrnn.errors import ConfigError


CONFIG = ModelConfig(vocab_size=6, hidden_size=4, dtype="float64")


def _params(seed=0):
    return network.init_params(CONFIG, np.random.default_rng(seed), init_scale=1.0)


def test_greedy_follows_the_argmax_of_each_step():
    params = _params()
    ids = [int(i[0]) for i in sampling.generate(params, CONFIG, np.array([2]), SampleConfig(length=5, greedy=True), None)]
    expected, state, token = [], network.initial_hidden(CONFIG, 1), 2
    for _ in range(5):
        logits, state = network.step(params, CONFIG, np.array([token]), state)
        token = int(np.argmax(logits[0]))
        expected.append(token)
    assert ids == expected


def test_temperature_zero_means_greedy():
    params = _params()
    greedy = list(sampling.generate(params, CONFIG, np.array([1, 3]), SampleConfig(length=8, greedy=True), None))
    zero = list(sampling.generate(params, CONFIG, np.array([1, 3]), SampleConfig(length=8, temperature=0), None))
    assert np.array_equal(np.array(greedy), np.array(zero))


def test_distribution_temperature_and_top_k():
    logits = np.array([[np.log(1.0), np.log(2.0), np.log(5.0)]])
    np.testing.assert_allclose(sampling.next_token_distribution(logits, 1.0, None), [[0.125, 0.25, 0.625]])
    np.testing.assert_allclose(sampling.next_token_distribution(logits, 1.0, 2), [[0, 2 / 7, 5 / 7]])
    sharp = sampling.next_token_distribution(logits, 0.5, None)  # p ∝ weight²
    np.testing.assert_allclose(sharp, [[1 / 30, 4 / 30, 25 / 30]])


def test_choose_draws_with_the_right_frequencies():
    probs = np.tile([[0.1, 0.0, 0.6, 0.3]], (20000, 1))
    draws = sampling.choose(probs, np.random.default_rng(0))
    frequencies = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(frequencies, [0.1, 0.0, 0.6, 0.3], atol=0.01)
    assert frequencies[1] == 0.0


def test_streams_are_independent_and_seeded():
    params = _params()
    config = SampleConfig(length=30, num_samples=3)
    first = np.array(list(sampling.generate(params, CONFIG, np.array([0]), config, np.random.default_rng(7))))
    again = np.array(list(sampling.generate(params, CONFIG, np.array([0]), config, np.random.default_rng(7))))
    assert first.shape == (30, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first[:, 0], first[:, 1])


def test_sample_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="--top-k must be positive, got -1"):
        SampleConfig(top_k=-1)
    with pytest.raises(ConfigError, match="--temperature must be zero or positive"):
        SampleConfig(temperature=-0.5)
    with pytest.raises(ConfigError, match="--num-samples must be positive"):
        SampleConfig(num_samples=0)
    with pytest.raises(ConfigError, match="--length must be positive, got 0"):
        SampleConfig(length=0)
