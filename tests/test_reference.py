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


@pytest.mark.parametrize("look_ahead", [0, 3])
def test_the_bidirectional_formulas_are_the_bidirectional_model(look_ahead):
    from charrnn.model import bidirectional

    rng = np.random.default_rng(3 + look_ahead)
    config = ModelConfig(vocab_size=V, hidden_size=H, dtype="float64", embed_size=0, bidirectional=True)
    params = network.init_params(config, rng, init_scale=0.3, embedding_scale=0.5)
    params["b_h"] += rng.standard_normal(H) * 0.1
    params["b_h.back"] += rng.standard_normal(H) * 0.1
    tokens = rng.integers(V, size=T + 1 + look_ahead)
    h0 = rng.standard_normal(H) * 0.5
    inputs, targets, ahead = tokens[:T], tokens[1 : T + 1], tokens[T + 1 :]
    result = bidirectional.loss_and_grads(params, config, inputs[:, None], targets[:, None], {"h.0": h0[None, :].copy()},
                                          ahead=ahead[:, None])
    columns = {**_column_params(params), **{
        f"{name}_back": value for name, value in _column_params(
            {name: params[name + ".back"] for name in ("W_xh", "W_hh", "W_hy", "b_h")} | {"b_y": params["b_y"]}).items()
        if name != "b_y"}}
    loss, grads, h_last = reference.bidirectional_loss_and_grads(
        columns, inputs.tolist(), targets.tolist(), ahead.tolist(), h0[:, None])
    assert result.loss_nats == pytest.approx(loss, rel=1e-13)
    dense = {name: grad.to_dense(V) if hasattr(grad, "to_dense") else grad for name, grad in result.grads.items()}
    expected = {**_column_params(dense), **{
        f"{name}_back": value for name, value in _column_params(
            {name: dense[name + ".back"] for name in ("W_xh", "W_hh", "W_hy", "b_h")} | {"b_y": dense["b_y"]}).items()
        if name != "b_y"}}
    assert set(expected) == set(grads)
    for name in expected:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-11, atol=1e-15, err_msg=name)
    np.testing.assert_allclose(h_last[:, 0], result.hidden_last["h.0"][0], rtol=1e-13)
    assert set(reference.init_bidirectional_params(V, H, rng)) == set(columns)
