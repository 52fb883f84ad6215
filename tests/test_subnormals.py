"""No subnormal floats late in training: every value the arithmetic keeps is a normal float or zero.

A float32 below 1.2e-38 is subnormal, and x86 processors compute with one in microcode (on some models a
hundred times slower). Training would make them in the optimizers' squares of tiny gradients, in their
averages decaying towards zero, and in the softmax of very negative logits; both backends keep them out
by arithmetic. Each test first shows that the textbook arithmetic (the plain twins) makes them on its
input, so none of these checks can pass by accident.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from charrnn.config import ModelConfig, TrainConfig
from charrnn.model import backend, network, ops, optim
from charrnn.training import loop

TINY = np.finfo(np.float32).tiny
BACKENDS = [
    "numpy",
    pytest.param("numba", marks=pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                                   reason="the numba backend needs numba ('.[fast]')")),
]


def subnormals(array: np.ndarray) -> int:
    """How many elements of ``array`` are subnormal: nonzero and below the smallest normal float."""
    magnitudes = np.abs(array)
    return int(np.count_nonzero((magnitudes > 0) & (magnitudes < np.finfo(array.dtype).tiny)))


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("optimizer", optim.SLOTS)
def test_a_square_that_would_be_subnormal_counts_as_zero(optimizer, backend_name):
    kernels = backend.select(backend_name)
    gradient = np.array([1e-20, 1e-10, 0.0, -3e-20], dtype=np.float32)  # (1e-20)² = 1e-40 is subnormal
    params, plain_params = {"w": np.ones(4, np.float32)}, {"w": np.ones(4, np.float32)}
    state, plain_state = optim.init_state(optimizer, params), optim.init_state(optimizer, plain_params)
    kernels.optimizer_update(optimizer, params, {"w": gradient.copy()}, state, learning_rate=0.01)
    optim.update_plain(optimizer, plain_params, {"w": gradient.copy()}, plain_state, learning_rate=0.01)
    squares = f"{optim.SLOTS[optimizer][-1]}.w"  # sum_sq, mean_sq or v
    assert subnormals(plain_state[squares]) == 2  # the textbook arithmetic makes them
    assert state[squares][[0, 2, 3]].tolist() == [0.0, 0.0, 0.0] and state[squares][1] > 0
    assert sum(subnormals(value) for value in state.values() if value.dtype.kind == "f") == 0
    np.testing.assert_allclose(params["w"], plain_params["w"], rtol=1e-6)  # every weight moves alike


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_an_average_decaying_towards_zero_becomes_zero_never_subnormal(optimizer, backend_name):
    kernels = backend.select(backend_name)
    outcomes = []
    for update in (kernels.optimizer_update, optim.update_plain):
        params = {"w": np.ones(3, np.float32)}
        state = optim.init_state(optimizer, params)
        for slot in optim.SLOTS[optimizer]:
            state[f"{slot}.w"][:] = [1.01 * TINY, 1e-30, 0.5]  # Adam's v (β2 = 0.999) falls below tiny in 11 steps
        if optimizer == "adam":
            state["m.w"][1] = -1e-36  # m is signed
        for _ in range(30):  # the gradient stays zero: a token that keeps out of the batch
            update(optimizer, params, {"w": np.zeros(3, np.float32)}, state, learning_rate=0.01)
        outcomes.append(state)
    state, plain_state = outcomes
    assert sum(subnormals(plain_state[f"{slot}.w"]) for slot in optim.SLOTS[optimizer]) > 0
    for slot in optim.SLOTS[optimizer]:
        assert subnormals(state[f"{slot}.w"]) == 0, slot
        assert state[f"{slot}.w"][0] == 0, slot  # from just above the smallest normal to zero
        assert state[f"{slot}.w"][2] == pytest.approx(plain_state[f"{slot}.w"][2], rel=1e-6)  # large ones as before


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_the_softmax_of_very_negative_logits_is_exact_and_never_subnormal(backend_name):
    kernels = backend.select(backend_name)
    # Row 0 lies far below zero as a whole (its largest logit −40) but needs no shift against overflow;
    # row 1 is ordinary but for logits far below its largest. Each row's target is its largest logit.
    logits = np.array([[-40.0, -41.0, -99.5, -130.0], [3.0, 2.0, -56.5, -300.0]], dtype=np.float32)
    targets = np.array([0, 0])
    expected_loss, expected = ops.softmax_cross_entropy_plain(logits.astype(np.float64), targets)
    loss, grad = kernels.softmax_cross_entropy(logits.copy(), targets)
    assert subnormals(grad) == 0
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    # e^−59.5 and e^−59.5 of their rows' largest: normal floats, each within float32 precision (an exp
    # computed unshifted as a subnormal, e^−99.5 = 6e-44, would have had 5 significant bits).
    np.testing.assert_allclose(grad[:, 2], expected[:, 2], rtol=1e-5)
    # Beyond e^−60 of the largest, probabilities are raised to that floor, and differ from the textbook
    # by less than e^-60 / N, by design.
    np.testing.assert_allclose(grad[:, 3], expected[:, 3], rtol=0, atol=np.exp(-ops.EXP_RANGE) / len(targets))
    assert (grad[:, 3] > 0).all()


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("optimizer", optim.SLOTS)
def test_a_late_training_step_leaves_no_subnormal_in_any_array(optimizer, backend_name):
    kernels = backend.select(backend_name)
    vocab, rare = 12, slice(6, 12)  # tokens 6..11 never occur, and the model has learnt they are improbable
    model_config = ModelConfig(vocab_size=vocab, hidden_size=8)
    train_config = TrainConfig(seq_length=5, batch_size=4, optimizer=optimizer, learning_rate=0.01,
                               max_steps=10, rng_seed=0)
    trainee = loop.new_trainee(model_config, train_config, kernels)
    trainee.params["b_y"][rare] = -38.5  # p ≈ e^-38.5: their output columns' gradients are near 1e-20
    streams = np.random.default_rng(1).integers(6, size=(4, 40))

    # The textbook arithmetic on the same first step squares those gradients into subnormals.
    chunk = streams[:, :6].T
    grads = network.loss_and_grads(trainee.params, model_config, np.ascontiguousarray(chunk[:-1]),
                                   np.ascontiguousarray(chunk[1:]), trainee.hidden, kernels=kernels).grads
    plain_params = {name: value.copy() for name, value in trainee.params.items()}
    plain_state = optim.update_plain(optimizer, plain_params, grads, optim.init_state(optimizer, plain_params),
                                     learning_rate=0.01)
    squares = f"{optim.SLOTS[optimizer][-1]}.W_hy"
    made = (plain_state[squares] != 0) & (np.abs(plain_state[squares]) < TINY)
    assert made[:, rare].any() and not made[:, :6].any()

    loop.train_step(trainee, streams, train_config)
    assert (trainee.optimizer_state[squares][made] == 0).all()  # counted as zero, as a flushing processor would
    np.testing.assert_allclose(trainee.optimizer_state[squares][~made], plain_state[squares][~made], rtol=1e-5)
    for _ in range(3):
        loop.train_step(trainee, streams, train_config)
    arrays = {**trainee.params, **trainee.optimizer_state, **trainee.hidden}
    floats = {name: value for name, value in arrays.items() if value.dtype.kind == "f"}
    assert {name: subnormals(value) for name, value in floats.items()} == dict.fromkeys(floats, 0)
