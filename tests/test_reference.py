"""The learner's one-file model (charrnn/model/reference.py) is the model charrnn trains, to the last bit
of float64: the same loss, every gradient, the same Adagrad step, the same run."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.streams import split_streams
from charrnn.model import network, reference
from charrnn.training import loop

V, H, T = 7, 5, 6


def _column_params(params: network.Params) -> reference.Params:
    """charrnn's row-vector parameters as the reference's column-vector ones (every matrix transposed)."""
    return {
        "W_xh": params["W_xh"].T.copy(), "W_hh": params["W_hh"].T.copy(), "W_hy": params["W_hy"].T.copy(),
        "b_h": params["b_h"].reshape(-1, 1).copy(), "b_y": params["b_y"].reshape(-1, 1).copy(),
    }


def _model(rng):
    config = ModelConfig(vocab_size=V, hidden_size=H, dtype="float64", embed_size=0)
    return config, network.init_params(config, rng, init_scale=0.3, embedding_scale=0.5)


def test_the_reference_starts_from_the_weights_charrnn_draws():
    config = ModelConfig(vocab_size=V, hidden_size=H, dtype="float64", embed_size=0)
    ours = network.init_params(config, np.random.default_rng(7), table_scale=TrainConfig(max_steps=1).table_init_scale)
    theirs = reference.init_params(V, H, np.random.default_rng(7))
    expected = _column_params(ours)
    for name in expected:
        np.testing.assert_array_equal(theirs[name], expected[name], err_msg=name)


def test_the_same_loss_and_gradients_as_the_batched_model():
    rng = np.random.default_rng(1)
    config, params = _model(rng)
    ids = rng.integers(V, size=T + 1)
    h0 = rng.standard_normal(H) * 0.5
    result = network.loss_and_grads(params, config, ids[:-1, None], ids[1:, None], {"h.0": h0[None, :].copy()})
    loss, grads, h_last = reference.loss_and_grads(_column_params(params), ids[:-1].tolist(), ids[1:].tolist(),
                                                   h0[:, None])
    assert result.loss_nats == pytest.approx(loss, rel=1e-13)
    dense = {**result.grads, "W_xh": result.grads["W_xh"].to_dense(V)}
    expected = _column_params(dense)
    for name in expected:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-11, atol=1e-15, err_msg=name)
    np.testing.assert_allclose(h_last[:, 0], result.hidden_last["h.0"][0], rtol=1e-13)


def test_a_run_of_the_reference_trainer_is_a_run_of_charrnn_at_batch_1():
    rng = np.random.default_rng(2)
    config, params = _model(rng)
    ids = rng.integers(V, size=50)
    train_config = TrainConfig(batch_size=1, seq_length=T, learning_rate=0.1, clip=0.3, max_steps=20, rng_seed=0)
    trainee = loop.new_trainee(config, train_config)
    trainee.params = {name: value.copy() for name, value in params.items()}
    trainer = reference.Trainer(V, H, seq_length=T, learning_rate=0.1, clip=0.3)
    trainer.params = _column_params(params)
    streams = split_streams(ids, 1, T)
    for _ in range(20):  # 8 chunks an epoch: the runs start over with a zero state twice
        ours = loop.train_step(trainee, streams, train_config).loss_nats
        assert trainer.train_step(ids) == pytest.approx(ours, rel=1e-12)
    expected = _column_params(trainee.params)
    for name in expected:
        np.testing.assert_allclose(trainer.params[name], expected[name], rtol=1e-10, err_msg=name)
