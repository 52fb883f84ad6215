"""The bidirectional (blank-filling) model: every gradient against finite differences, for every cell and
depth; what it may and may not see; and that it is two one-directional stacks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from charrnn.config import ModelConfig
from charrnn.model import bidirectional, network, ops
from conftest import numeric_gradient, relative_error

VOCAB, HIDDEN, STEPS, BATCH = 5, 4, 4, 2


def _tiny_problem(seed: int = 0, vocab: int = VOCAB, look_ahead: int = 0, **config_options):
    rng = np.random.default_rng(seed)
    config = ModelConfig(vocab_size=vocab, hidden_size=HIDDEN, dtype="float64", bidirectional=True, **config_options)
    params = network.init_params(config, rng, init_scale=0.5)
    for name, value in params.items():
        if name.startswith("b_"):  # non-zero biases exercise their gradients fully
            value += rng.standard_normal(value.shape) * 0.1
    tokens = rng.integers(vocab, size=(STEPS + 1 + look_ahead, BATCH))
    hidden0 = {k: rng.standard_normal(v.shape) * 0.5 for k, v in network.initial_hidden(config, BATCH).items()}
    return config, params, tokens[:STEPS], tokens[1 : STEPS + 1], tokens[STEPS + 1 :], hidden0


MODELS = [
    # Every cell at depths 1 and 2 (and 3 once), with and without a look-ahead, a learned embedding
    # (shared by both stacks) and dropout.
    {"cell": "rnn", "embed_size": 0},
    {"cell": "rnn", "activation": "relu", "embed_size": 0, "look_ahead": 2},
    {"cell": "lstm", "embed_size": 0, "look_ahead": 1},
    {"cell": "gru", "embed_size": 0, "look_ahead": 3},
    {"cell": "rnn", "num_layers": 2, "embed_size": 3, "look_ahead": 1},
    {"cell": "lstm", "num_layers": 2, "embed_size": 0, "look_ahead": 2},
    {"cell": "gru", "num_layers": 2, "embed_size": 3},
    {"cell": "rnn", "num_layers": 3, "dropout": 0.3, "embed_size": 3, "look_ahead": 2},
    # A vocabulary larger than the tokens of a step: the embedding read through W_xh row by row.
    {"cell": "lstm", "embed_size": 3, "vocab": 12, "look_ahead": 2},
]


@pytest.mark.parametrize("options", MODELS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_every_gradient_matches_centered_finite_differences(options):
    config, params, inputs, targets, ahead, hidden0 = _tiny_problem(**options)

    def run():
        return bidirectional.loss_and_grads(params, config, inputs, targets, hidden0, np.random.default_rng(7),
                                            ahead=ahead)

    def loss() -> float:
        if config.dropout:  # the masks are drawn by the training pass only
            return run().loss_nats
        losses, _ = bidirectional.token_losses(params, config, inputs, targets, hidden0, ahead=ahead)
        return float(losses.mean())

    grads = run().grads
    assert set(grads) == set(params)
    assert any(name.endswith(network.BACKWARD) for name in grads)
    for name, analytic in grads.items():
        if isinstance(analytic, ops.SparseRows):
            analytic = analytic.to_dense(config.vocab_size)
        numeric = numeric_gradient(loss, params[name])
        assert np.abs(numeric).max() > 0, name  # every parameter reaches the loss
        assert relative_error(analytic, numeric) < 1e-6, name


def test_a_token_is_never_predicted_from_itself():
    # Changing target x_t changes the loss only through the other targets' contexts, never through its
    # own prediction: the logits of position t do not depend on x_t.
    config, params, inputs, targets, ahead, hidden0 = _tiny_problem(3, cell="gru", num_layers=2, look_ahead=2)
    tokens = np.concatenate([inputs[:1], targets, ahead])  # x_0 … x_{T+M}
    base, _ = bidirectional.token_losses(params, config, inputs, targets, hidden0, ahead=ahead)
    for t in range(1, STEPS + 1):
        changed = tokens.copy()
        changed[t] = (changed[t] + 1) % VOCAB
        losses, _ = bidirectional.token_losses(params, config, changed[:STEPS], changed[1 : STEPS + 1], hidden0,
                                               ahead=changed[STEPS + 1 :])
        # Target t − 1's loss is that of another token now; with the same logits, −log p(x) changes by the
        # difference of two logits, but the distribution itself is the one read from both sides.
        logits_before = _logits(params, config, tokens, hidden0, t)
        logits_after = _logits(params, config, changed, hidden0, t)
        np.testing.assert_allclose(logits_after, logits_before, rtol=1e-12)
        assert not np.allclose(losses[t - 1], base[t - 1])


def _logits(params, config, tokens, hidden0, t):
    """The logits for position t from the left tokens (after hidden0) and the right ones."""
    top, _, _ = network.forward_layers(params, config, tokens[:t], hidden0, None)
    right = tokens[t + 1 :]
    back = bidirectional.backward_view(params, config)
    back_top, _, _ = network.forward_layers(back, config, np.ascontiguousarray(right[::-1]),
                                            network.initial_hidden(config, tokens.shape[1]), None)
    return top[-1] @ params["W_hy"] + back_top[-1] @ params["W_hy.back"] + params["b_y"]


def test_the_window_losses_are_the_blank_logits_of_each_position():
    # With the look-ahead reaching the end of the tokens, position t's prediction reads x_<t (after the
    # carried state) and every token after it: blank_logits from zero states gives the same for hidden0 = 0.
    config, params, inputs, targets, ahead, _ = _tiny_problem(4, cell="lstm", look_ahead=2)
    zero = network.initial_hidden(config, BATCH)
    losses, _ = bidirectional.token_losses(params, config, inputs, targets, zero, ahead=ahead)
    tokens = np.concatenate([inputs[:1], targets, ahead])
    for t in range(1, STEPS + 1):
        logits = bidirectional.blank_logits(params, config, tokens[:t], tokens[t + 1 :])
        expected = ops.cross_entropy_per_token(logits, tokens[t])
        np.testing.assert_allclose(losses[t - 1], expected, rtol=1e-10)


def test_the_forward_stack_is_the_one_directional_model_and_its_state_is_carried():
    config, params, inputs, targets, ahead, hidden0 = _tiny_problem(5, cell="gru", num_layers=2, look_ahead=1)
    result = bidirectional.loss_and_grads(params, config, inputs, targets, hidden0, ahead=ahead)
    forward = dataclasses.replace(config, bidirectional=False)
    one_way = {name: params[name] for name in network.param_shapes(forward)}
    expected = network.loss_and_grads(one_way, forward, inputs, targets, hidden0)
    for key, value in expected.hidden_last.items():
        np.testing.assert_allclose(result.hidden_last[key], value, rtol=1e-12)


def test_parameter_shapes_double_all_but_the_embedding_and_the_output_bias():
    config = ModelConfig(vocab_size=7, hidden_size=3, num_layers=2, cell="gru", embed_size=5, bidirectional=True)
    shapes = network.param_shapes(config)
    assert shapes == {
        "W_xe": (7, 5), "W_xh": (5, 9), "W_hh": (3, 9), "b_h": (9,), "b_hn": (3,),
        "W_xh.1": (3, 9), "W_hh.1": (3, 9), "b_h.1": (9,), "b_hn.1": (3,),
        "W_hy": (3, 7), "b_y": (7,),
        "W_xh.back": (5, 9), "W_hh.back": (3, 9), "b_h.back": (9,), "b_hn.back": (3,),
        "W_xh.1.back": (3, 9), "W_hh.1.back": (3, 9), "b_h.1.back": (9,), "b_hn.1.back": (3,),
        "W_hy.back": (3, 7),
    }
    lstm = ModelConfig(vocab_size=7, hidden_size=3, cell="lstm", embed_size=0, bidirectional=True)
    params = network.init_params(lstm, np.random.default_rng(0), 0.01, embedding_scale=1.0, table_scale=0.5)
    assert params["b_h.back"].tolist() == params["b_h"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert 0.2 < float(np.std(params["W_xh.back"])) < 0.8  # the backward stack's own embedding rows


def test_an_embedding_of_its_own_for_the_backward_stack_gets_its_own_exact_gradient():
    # The variant bench/bidirectional_variants.py measures against the shared embedding.
    config, params, inputs, targets, ahead, hidden0 = _tiny_problem(6, cell="rnn", embed_size=3, look_ahead=1)
    params["W_xe.back"] = np.random.default_rng(8).standard_normal(params["W_xe"].shape)

    def loss() -> float:
        losses, _ = bidirectional.token_losses(params, config, inputs, targets, hidden0, ahead=ahead)
        return float(losses.mean())

    grads = bidirectional.loss_and_grads(params, config, inputs, targets, hidden0, ahead=ahead).grads
    assert set(grads) == set(params)
    for name in ("W_xe", "W_xe.back", "W_xh.back"):
        analytic = grads[name].to_dense(VOCAB) if isinstance(grads[name], ops.SparseRows) else grads[name]
        assert relative_error(analytic, numeric_gradient(loss, params[name])) < 1e-6, name
