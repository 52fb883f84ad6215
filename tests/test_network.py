"""The model: every parameter's gradient against finite differences, for every cell and depth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from charrnn.model import network, ops
from charrnn.config import ModelConfig
from conftest import numeric_gradient, relative_error

VOCAB, HIDDEN, STEPS, BATCH = 5, 6, 4, 3


def _tiny_problem(seed: int = 0, vocab: int = VOCAB, **config_options):
    rng = np.random.default_rng(seed)
    config = ModelConfig(vocab_size=vocab, hidden_size=HIDDEN, dtype="float64", **config_options)
    params = network.init_params(config, rng, init_scale=0.5)
    for name, value in params.items():
        if name.startswith("b_"):  # non-zero biases exercise their gradients fully
            value += rng.standard_normal(value.shape) * 0.1
    inputs = rng.integers(vocab, size=(STEPS, BATCH))
    targets = rng.integers(vocab, size=(STEPS, BATCH))
    hidden0 = {k: rng.standard_normal(v.shape) * 0.5 for k, v in network.initial_hidden(config, BATCH).items()}
    return config, params, inputs, targets, hidden0


# The slowest checks (seconds each) run with -m slow: what they exercise, the default run checks in a
# smaller model too (a middle layer: rnn with 3 layers; stacked gates: gru with 2, lstm with 2 and dropout).
SLOW = pytest.mark.slow
MODELS = [
    # The one-table model: the first layer's input weights are the embedding.
    {"cell": "rnn", "embed_size": 0},
    {"cell": "rnn", "activation": "relu", "embed_size": 0},
    {"cell": "lstm", "embed_size": 0},
    {"cell": "gru", "embed_size": 0},
    {"cell": "rnn", "num_layers": 2, "embed_size": 0},
    pytest.param({"cell": "lstm", "num_layers": 2, "embed_size": 0}, marks=SLOW),
    pytest.param({"cell": "gru", "num_layers": 3, "embed_size": 0}, marks=SLOW),
    pytest.param({"cell": "lstm", "num_layers": 2, "dropout": 0.4, "embed_size": 0}, marks=SLOW),
    {"cell": "rnn", "num_layers": 3, "dropout": 0.3, "embed_size": 0},
    # A learned embedding of size D (here 4, neither V nor H) read through the first layer's own W_xh.
    {"cell": "rnn", "embed_size": 4},
    {"cell": "rnn", "activation": "relu", "embed_size": 4},
    {"cell": "lstm", "embed_size": 4},
    {"cell": "gru", "embed_size": 4},
    {"cell": "rnn", "num_layers": 2, "embed_size": 4},
    {"cell": "lstm", "num_layers": 2, "dropout": 0.4, "embed_size": 4},
    pytest.param({"cell": "gru", "num_layers": 3, "embed_size": 7}, marks=SLOW),
    # A vocabulary larger than the T·B tokens of a step: the first layer reads each token's embedding
    # through W_xh instead of looking up rows of the product W_xe W_xh (see network.forward_layers).
    {"cell": "rnn", "embed_size": 4, "vocab": 20},
    {"cell": "lstm", "embed_size": 4, "vocab": 20},
    {"cell": "gru", "num_layers": 2, "embed_size": 3, "vocab": 20},
]


@pytest.mark.parametrize("options", MODELS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_every_gradient_matches_centered_finite_differences(options):
    config, params, inputs, targets, hidden0 = _tiny_problem(**options)

    def run():
        # A freshly seeded generator draws the same dropout masks on every call.
        return network.loss_and_grads(params, config, inputs, targets, hidden0, np.random.default_rng(7))

    def loss() -> float:
        # The forward pass alone is the same function, a third of the cost; dropout's masks need training's.
        if config.dropout and config.num_layers > 1:
            return run().loss_nats
        return float(network.token_losses(params, config, inputs, targets, hidden0)[0].mean())

    grads = run().grads
    assert set(grads) == set(params)
    for name, analytic in grads.items():
        if isinstance(analytic, ops.SparseRows):
            analytic = analytic.to_dense(config.vocab_size)
        numeric = numeric_gradient(loss, params[name])
        assert relative_error(analytic, numeric) < 1e-6, name


def test_dropout_changes_training_but_not_prediction():
    config, params, inputs, targets, hidden0 = _tiny_problem(cell="rnn", num_layers=2, dropout=0.5)
    with_masks = network.loss_and_grads(params, config, inputs, targets, hidden0, np.random.default_rng(0))
    without = network.loss_and_grads(params, config, inputs, targets, hidden0, None)
    assert with_masks.loss_nats != pytest.approx(without.loss_nats)
    losses, _ = network.token_losses(params, config, inputs, targets, hidden0)
    assert losses.mean() == pytest.approx(without.loss_nats, rel=1e-12)


def test_loss_at_initialisation_is_near_uniform_baseline():
    config = ModelConfig(vocab_size=50, hidden_size=16, dtype="float64")
    inputs = np.zeros((5, 2), dtype=np.int64)
    tiny = network.init_params(config, np.random.default_rng(0), init_scale=0.01)
    result = network.loss_and_grads(tiny, config, inputs, inputs, network.initial_hidden(config, 2))
    assert result.loss_nats == pytest.approx(np.log(50), abs=1e-3)
    # PyTorch's U(−1/√H, 1/√H) makes logits of a few tenths: a little above a uniform guess.
    params = network.init_params(config, np.random.default_rng(0), embedding_scale=1.0)
    result = network.loss_and_grads(params, config, inputs, inputs, network.initial_hidden(config, 2))
    assert np.log(50) - 0.05 < result.loss_nats < np.log(50) + 0.3


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_single_steps_reproduce_the_sequence_forward(cell):
    config, params, inputs, targets, hidden0 = _tiny_problem(1, cell=cell, num_layers=2)
    state = hidden0
    for t in range(STEPS):
        logits, state = network.step(params, config, inputs[t], state)
    result = network.loss_and_grads(params, config, inputs, targets, hidden0)
    for key in state:
        np.testing.assert_allclose(state[key], result.hidden_last[key], rtol=1e-12)
    run_logits, run_state = network.step(params, config, inputs, hidden0)
    np.testing.assert_allclose(run_logits, logits, rtol=1e-12)


def test_parameter_shapes_and_counts():
    config = ModelConfig(vocab_size=7, hidden_size=3, num_layers=2, cell="gru", embed_size=0)
    shapes = network.param_shapes(config)
    assert shapes == {
        "W_xh": (7, 9), "W_hh": (3, 9), "b_h": (9,), "b_hn": (3,),
        "W_xh.1": (3, 9), "W_hh.1": (3, 9), "b_h.1": (9,), "b_hn.1": (3,),
        "W_hy": (3, 7), "b_y": (7,),
    }
    params = network.init_params(config, np.random.default_rng(0))
    # GRU layer: 3H·(D + H + 1) + H; output layer H·V + V.
    assert network.count_parameters(params) == (9 * (7 + 3 + 1) + 3) + (9 * (3 + 3 + 1) + 3) + (3 * 7 + 7)
    assert set(network.initial_hidden(ModelConfig(vocab_size=7, hidden_size=3, num_layers=2, cell="lstm"), 4)) == {"h.0", "c.0", "h.1", "c.1"}


def test_init_params_dtype_determinism_and_lstm_forget_bias():
    config = ModelConfig(vocab_size=7, hidden_size=3, embed_size=0)
    first = network.init_params(config, np.random.default_rng(5))
    second = network.init_params(config, np.random.default_rng(5))
    assert list(first) == ["W_xh", "W_hh", "b_h", "W_hy", "b_y"]
    assert all(p.dtype == np.float32 for p in first.values())
    assert all(np.array_equal(first[n], second[n]) for n in first)
    assert not first["b_h"].any()
    lstm = network.init_params(ModelConfig(vocab_size=7, hidden_size=3, cell="lstm", embed_size=0), np.random.default_rng(5))
    assert lstm["b_h"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    big = ModelConfig(vocab_size=2000, hidden_size=50, num_layers=2, embed_size=0)
    scaled = network.init_params(big, np.random.default_rng(5), 0.01, table_scale=0.5)
    assert 0.49 < float(np.std(scaled["W_xh"])) < 0.51  # the one table's rows are its embeddings
    assert 0.0095 < float(np.std(scaled["W_hy"])) < 0.0105 and 0.009 < float(np.std(scaled["W_xh.1"])) < 0.011
    plain = network.init_params(big, np.random.default_rng(5), 0.01)
    assert np.allclose(scaled["W_xh"], plain["W_xh"] * 50) and np.array_equal(scaled["W_hh"], plain["W_hh"])


def test_weights_start_as_pytorch_starts_them():
    config = ModelConfig(vocab_size=300, hidden_size=64, num_layers=2, cell="gru", embed_size=32)
    params = network.init_params(config, np.random.default_rng(5), embedding_scale=1.0)
    bound = 1 / 8  # 1/√H
    for name in ("W_xh", "W_hh", "W_xh.1", "W_hh.1", "W_hy"):
        assert -bound <= params[name].min() < -0.9 * bound and 0.9 * bound < params[name].max() <= bound, name
    assert 0.95 < float(np.std(params["W_xe"])) < 1.05  # nn.Embedding's N(0, 1)


def test_an_embedding_shapes_the_first_layer_and_nothing_else():
    config = ModelConfig(vocab_size=7, hidden_size=3, num_layers=2, cell="gru", embed_size=5)
    shapes = network.param_shapes(config)
    assert shapes == {
        "W_xe": (7, 5), "W_xh": (5, 9), "W_hh": (3, 9), "b_h": (9,), "b_hn": (3,),
        "W_xh.1": (3, 9), "W_hh.1": (3, 9), "b_h.1": (9,), "b_hn.1": (3,),
        "W_hy": (3, 7), "b_y": (7,),
    }
    params = network.init_params(config, np.random.default_rng(0))
    assert network.count_parameters(params) == 7 * 5 + (9 * (5 + 3 + 1) + 3) + (9 * (3 + 3 + 1) + 3) + (3 * 7 + 7)
    assert network._parameter_count(dataclasses.replace(config, num_layers=4)) == (
        network.count_parameters(params) + 2 * (9 * (3 + 3 + 1) + 3))
    big = ModelConfig(vocab_size=2000, hidden_size=50, embed_size=40)
    scaled = network.init_params(big, np.random.default_rng(5), 0.01, embedding_scale=0.5)
    assert 0.49 < float(np.std(scaled["W_xe"])) < 0.51  # the embedding takes the embedding scale
    assert 0.0095 < float(np.std(scaled["W_xh"])) < 0.0105  # its input matrix the weights'


def test_an_embedded_model_is_the_one_table_model_with_the_table_factored():
    # e_t W_xh = x_t (W_xe W_xh): the same loss as a one-table model whose W_xh is that product.
    config, params, inputs, targets, hidden0 = _tiny_problem(3, cell="lstm", embed_size=2)
    table_config = dataclasses.replace(config, embed_size=0)
    table = {name: value for name, value in params.items() if name != "W_xe"}
    table["W_xh"] = params["W_xe"] @ params["W_xh"]
    embedded = network.loss_and_grads(params, config, inputs, targets, hidden0)
    one_table = network.loss_and_grads(table, table_config, inputs, targets, hidden0)
    assert embedded.loss_nats == pytest.approx(one_table.loss_nats, rel=1e-12)
    assert one_table.loss_nats != pytest.approx(np.log(VOCAB), rel=1e-3)  # a real model, not a uniform guess
    # The chain rule through the product: dL/dW_xe = dL/dTable · W_xhᵀ on the rows of the tokens read.
    d_table = one_table.grads["W_xh"].to_dense(VOCAB)
    np.testing.assert_allclose(embedded.grads["W_xe"].to_dense(VOCAB), d_table @ params["W_xh"].T, rtol=1e-10)
    np.testing.assert_allclose(embedded.grads["W_xh"], params["W_xe"].T @ d_table, rtol=1e-10)
