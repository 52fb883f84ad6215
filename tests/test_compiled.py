"""The compiled kernels (numba backend) against their numpy twins, finite differences and themselves."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys

import numpy as np
import pytest

from charrnn.model import backend, cells, network, ops, optim
from charrnn.training import loop
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import ConfigError
from charrnn.install import extra_hint
from conftest import numeric_gradient, relative_error

pytest.importorskip("numba", reason="the numba backend needs numba ('.[fast]')")
from charrnn.model.compiled import arithmetic, parallel  # noqa: E402  (after the skip: they import numba)
NUMBA = backend.select("numba")
NUMPY = backend.NUMPY

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]
VOCAB, HIDDEN, STEPS, BATCH = 5, 6, 4, 3


def _dense(grad):
    return grad.to_dense(VOCAB) if isinstance(grad, ops.SparseRows) else grad


def _copy(grads):
    """Gradients to hand to an update, which clips them in place."""
    return {
        name: ops.SparseRows(g.rows, g.values.copy()) if isinstance(g, ops.SparseRows) else g.copy()
        for name, g in grads.items()
    }


# --- the scalar functions the float32 kernels carry -------------------------------------------------


@pytest.mark.parametrize("name, reference, low, high", [("tanh", np.tanh, -12, 12), ("exp", np.exp, -87, 88)])
def test_float32_tanh_and_exp_are_within_a_few_ulp_everywhere(name, reference, low, high):
    x = np.linspace(low, high, 200_001, dtype=np.float32)
    kernel = arithmetic.tanh_float32 if name == "tanh" else arithmetic.exp_float32
    ours = np.array([kernel(v) for v in x[::97]], dtype=np.float32)
    exact = reference(x[::97].astype(np.float64))
    ulps = np.abs(ours - exact) / np.spacing(np.abs(exact).astype(np.float32))
    assert ulps.max() <= 5
    assert math.isnan(kernel(np.float32("nan")))
    if name == "tanh":
        assert kernel(np.float32(9.0)) == 1.0 and kernel(np.float32(-30.0)) == -1.0
        assert kernel(np.float32(1e-30)) == np.float32(1e-30)


# --- cells ---------------------------------------------------------------------------------------------


def _cell_problem(cell, dtype, seed=0, batch=BATCH):
    rng = np.random.default_rng(seed)
    width = cells.GATES[cell] * HIDDEN
    x_proj = rng.standard_normal((STEPS, batch, width)).astype(dtype)
    hidden0 = {key: (rng.standard_normal((batch, HIDDEN)) * 0.5).astype(dtype) for key in cells.HIDDEN_KEYS[cell]}
    weights = {"W_hh": (rng.standard_normal((HIDDEN, width)) * 0.5).astype(dtype)}
    for name, shape in cells.EXTRA_WEIGHTS[cell].items():
        weights[name] = (rng.standard_normal(shape(HIDDEN)) * 0.3).astype(dtype)
    upstream = rng.standard_normal((STEPS, batch, HIDDEN)).astype(dtype)
    return x_proj, hidden0, weights, upstream


@pytest.mark.parametrize("cell, activation", CELLS)
@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("batch", [BATCH, 11], ids=["whole", "in-halves"])  # 11 ≥ MIN_BATCH: split 5 + 6
def test_cell_forward_and_backward_equal_the_numpy_cells(cell, activation, dtype, tolerance, batch):
    assert (batch >= parallel.BatchHalves.MIN_BATCH) == (batch == 11)
    x_proj, hidden0, weights, upstream = _cell_problem(cell, dtype, batch=batch)
    results = []
    for kernels in (NUMPY, NUMBA):
        out = kernels.cell_forward[cell](x_proj.copy(), hidden0, weights, activation)
        d_x, d_weights, d_state0 = kernels.cell_backward[cell](upstream, out.cache, weights)
        results.append((out.hs, out.last, d_x, d_weights, d_state0))
    (hs, last, d_x, d_weights, d_state0), (hs_c, last_c, d_x_c, d_weights_c, d_state0_c) = results
    assert hs_c.dtype == dtype and d_x_c.dtype == dtype
    np.testing.assert_allclose(hs_c, hs, rtol=0, atol=tolerance)
    np.testing.assert_allclose(d_x_c, d_x, rtol=0, atol=tolerance * 4)
    assert set(last_c) == set(last) and set(d_weights_c) == set(d_weights) and set(d_state0_c) == set(d_state0)
    for key in last:
        np.testing.assert_allclose(last_c[key], last[key], rtol=0, atol=tolerance)
    for key in d_weights:
        np.testing.assert_allclose(d_weights_c[key], d_weights[key], rtol=0, atol=tolerance * 10)
    for key in d_state0:
        np.testing.assert_allclose(d_state0_c[key], d_state0[key], rtol=0, atol=tolerance * 4)


@pytest.mark.parametrize("cell, activation", CELLS)
def test_compiled_cell_backward_matches_finite_differences(cell, activation):
    x_proj, hidden0, weights, upstream = _cell_problem(cell, np.float64)
    forward, backward = NUMBA.cell_forward[cell], NUMBA.cell_backward[cell]

    def loss() -> float:
        return float((forward(x_proj.copy(), hidden0, weights, activation).hs * upstream).sum())

    out = forward(x_proj.copy(), hidden0, weights, activation)
    d_x, d_weights, d_state0 = backward(upstream, out.cache, weights)
    checks = [(d_x, x_proj)] + [(d_weights[n], weights[n]) for n in weights] + [(d_state0[k], hidden0[k]) for k in hidden0]
    for analytic, array in checks:
        assert relative_error(analytic, numeric_gradient(loss, array)) < 1e-8


def test_the_halves_run_with_one_blas_thread_and_give_the_count_back_even_after_an_error():
    controller = parallel.openblas_controller()
    if controller is None or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the halves run whole here: one core, or no OpenBLAS that threadpoolctl controls")
    threads_before = controller.info()[0]["num_threads"]
    seen = []

    def loop(first: int, stop: int) -> None:
        seen.append((first, stop, controller.info()[0]["num_threads"]))

    parallel.HALVES.run(loop, 16)
    assert sorted(seen) == [(0, 8, 1), (8, 16, 1)]  # each half on its own thread, BLAS on one thread
    assert controller.info()[0]["num_threads"] == threads_before

    def failing(first: int, stop: int) -> None:
        if first == 0:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        parallel.HALVES.run(failing, 16)
    assert controller.info()[0]["num_threads"] == threads_before


def test_a_weight_whose_rows_are_4_kib_apart_is_multiplied_from_a_padded_copy_with_the_same_result():
    rng = np.random.default_rng(8)
    hidden = 256  # an LSTM's W_hh rows are then 4·256 float32 = 4 KiB apart
    weights = {"W_hh": (rng.standard_normal((hidden, 4 * hidden)) * 0.05).astype(np.float32)}
    padded = parallel.rows_apart_from_4k(weights["W_hh"], steps=3)
    assert padded.strides[0] == 4 * (4 * hidden + 16) and np.array_equal(padded, weights["W_hh"])
    assert parallel.rows_apart_from_4k(weights["W_hh"], steps=1) is weights["W_hh"]  # sampling: no copy
    x_proj = rng.standard_normal((3, 2, 4 * hidden)).astype(np.float32)
    hidden0 = {"h": np.zeros((2, hidden), np.float32), "c": np.zeros((2, hidden), np.float32)}
    expected = cells.lstm_forward(x_proj.copy(), hidden0, weights)
    got = NUMBA.cell_forward["lstm"](x_proj.copy(), hidden0, weights)
    np.testing.assert_allclose(got.hs, expected.hs, rtol=0, atol=2e-6)


def test_matmul_in_two_halves_equals_numpys_product_into_out_and_from_transposed_views():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((300, 256)).astype(np.float32)  # 300·256·64 multiply-adds: split in two halves
    b = rng.standard_normal((256, 64)).astype(np.float32)
    assert a.shape[0] * a.shape[1] * b.shape[1] >= parallel.SPLIT_MIN_MULTIPLY_ADDS
    out = np.empty((300, 64), np.float32)
    assert NUMBA.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)
    at = np.ascontiguousarray(a.T)  # (256, 300): multiplied from its transposed view, as gradients are
    np.testing.assert_allclose(NUMBA.matmul(at.T, b), a @ b, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(NUMBA.matmul(a[:3], b), np.matmul(a[:3], b))  # small: numpy's own call


# --- the whole model ------------------------------------------------------------------------------------


def _model_problem(dtype, seed=0, **options):
    rng = np.random.default_rng(seed)
    config = ModelConfig(vocab_size=VOCAB, hidden_size=HIDDEN, dtype=dtype, **options)
    params = network.init_params(config, rng, init_scale=0.5)
    for name, value in params.items():
        if name.startswith("b_"):
            value += (rng.standard_normal(value.shape) * 0.1).astype(dtype)
    inputs = rng.integers(VOCAB, size=(STEPS, BATCH))
    targets = rng.integers(VOCAB, size=(STEPS, BATCH))
    hidden0 = {k: (rng.standard_normal(v.shape) * 0.5).astype(dtype) for k, v in network.initial_hidden(config, BATCH).items()}
    return config, params, inputs, targets, hidden0


MODELS = [
    dict(cell=cell, activation=activation, num_layers=layers, dropout=dropout, embed_size=embed)
    for cell, activation in CELLS
    for layers, dropout, embed in [(1, 0.0, 0), (2, 0.0, 0), (2, 0.4, 0), (1, 0.0, 4), (2, 0.4, 4)]
]


def _model_id(options):
    return (f"{options['cell']}-{options['activation']}-L{options['num_layers']}-dropout{options['dropout']}"
            f"-embed{options['embed_size']}")


@pytest.mark.parametrize("options", MODELS, ids=_model_id)
def test_compiled_model_gradients_match_centered_finite_differences(options):
    config, params, inputs, targets, hidden0 = _model_problem("float64", **options)

    def run():
        return network.loss_and_grads(params, config, inputs, targets, hidden0, np.random.default_rng(7), kernels=NUMBA)

    def loss() -> float:
        # The forward pass alone is the same function, a third of the cost; dropout's masks need training's.
        if config.dropout and config.num_layers > 1:
            return run().loss_nats
        return float(network.token_losses(params, config, inputs, targets, hidden0, NUMBA)[0].mean())

    grads = run().grads
    assert set(grads) == set(params)
    for name, analytic in grads.items():
        numeric = numeric_gradient(loss, params[name])
        assert relative_error(_dense(analytic), numeric) < 1e-6, name


@pytest.mark.parametrize("optimizer", optim.SLOTS)
@pytest.mark.parametrize("options", MODELS, ids=_model_id)
def test_loss_gradients_and_update_equal_the_numpy_path_in_float32(options, optimizer):
    config, params, inputs, targets, hidden0 = _model_problem("float32", **options)
    outcomes = []
    for kernels in (NUMPY, NUMBA):
        trained = {name: value.copy() for name, value in params.items()}
        result = network.loss_and_grads(trained, config, inputs, targets, hidden0, np.random.default_rng(7), kernels=kernels)
        grads = {name: _dense(grad).copy() for name, grad in result.grads.items()}
        opt_state = optim.init_state(optimizer, trained)
        for _ in range(2):  # the second step reads the state the first one wrote
            kernels.optimizer_update(optimizer, trained, _copy(result.grads), opt_state, learning_rate=0.05, clip=0.2)
        outcomes.append((result.loss_nats, grads, result.hidden_last, trained, opt_state))
    (loss, grads, last, trained, opt_state), (loss_c, grads_c, last_c, trained_c, opt_state_c) = outcomes
    assert loss_c == pytest.approx(loss, rel=1e-6)
    for name in grads:
        np.testing.assert_allclose(grads_c[name], grads[name], rtol=1e-4, atol=1e-6, err_msg=name)
        # RMSProp and Adam divide a gradient by its own size, so a gradient near ε (1e-8) that differs in
        # its last float32 digits moves its parameter by a step (lr = 0.05) that differs in the fifth.
        np.testing.assert_allclose(trained_c[name], trained[name], rtol=1e-5, atol=2e-5, err_msg=name)
    for key in last:
        np.testing.assert_allclose(last_c[key], last[key], rtol=1e-5, atol=1e-6)
    assert set(opt_state_c) == set(opt_state)
    for key in opt_state:
        np.testing.assert_allclose(opt_state_c[key], opt_state[key], rtol=1e-4, atol=1e-7, err_msg=key)


def test_embedding_backward_sums_the_rows_of_each_distinct_id_as_numpy_does():
    rng = np.random.default_rng(6)
    ids = rng.integers(40, 60, size=(9, 7))
    d_out = rng.standard_normal((9, 7, 5)).astype(np.float32)
    expected = ops.embedding_backward(d_out, ids)
    got = NUMBA.embedding_backward(d_out, ids)
    assert got.rows.tolist() == expected.rows.tolist() == sorted(set(ids.ravel().tolist()))
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-6, atol=1e-6)
    one_id = NUMBA.embedding_backward(d_out[:1, :1], np.array([[3]]))
    assert one_id.rows.tolist() == [3] and np.array_equal(one_id.values, d_out[0, :1])


# --- softmax with cross-entropy ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 40.0, 400.0], ids=["small", "past-the-floor", "shifted"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_softmax_cross_entropy_equals_numpy_and_never_makes_subnormals(scale, with_bias):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((37, 300)) * scale).astype(np.float32)
    targets = rng.integers(300, size=37)
    bias = rng.standard_normal(300).astype(np.float32) if with_bias else None
    loss, grad = ops.softmax_cross_entropy(logits.copy(), targets, None if bias is None else bias.copy())
    loss_c, grad_c = NUMBA.softmax_cross_entropy(logits.copy(), targets, None if bias is None else bias.copy())
    assert loss_c == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(grad_c, grad, rtol=0, atol=1e-7)
    tiny = np.abs(grad_c[grad_c != 0]).min()
    assert tiny >= np.finfo(np.float32).tiny  # probabilities are floored at e^-60 of the row's largest


def test_softmax_cross_entropy_writes_into_the_logits_and_reports_divergence():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    loss, grad = NUMBA.softmax_cross_entropy(logits, np.array([2, 0]))
    assert grad is logits
    expected_first = math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 3
    assert loss == pytest.approx((expected_first + math.log(3)) / 2, rel=1e-6)
    np.testing.assert_allclose(grad[1], [(1 / 3 - 1) / 2, 1 / 6, 1 / 6], rtol=1e-6)
    diverged = np.array([[np.nan, 1.0, 2.0], [np.inf, 0.0, 0.0]], dtype=np.float32)
    loss_nan, _ = NUMBA.softmax_cross_entropy(diverged[:1].copy(), np.array([1]))
    loss_inf, _ = NUMBA.softmax_cross_entropy(diverged[1:].copy(), np.array([1]))
    assert not math.isfinite(loss_nan) and not math.isfinite(loss_inf)


def test_cross_entropy_per_token_equals_numpy_and_leaves_the_logits():
    rng = np.random.default_rng(4)
    for scale in (1.0, 300.0):
        logits = (rng.standard_normal((20, 50)) * scale).astype(np.float32)
        targets = rng.integers(50, size=20)
        kept = logits.copy()
        losses = NUMBA.cross_entropy_per_token(logits, targets)
        assert losses.dtype == np.float64 and np.array_equal(logits, kept)
        np.testing.assert_allclose(losses, ops.cross_entropy_per_token(logits, targets), rtol=1e-6, atol=1e-6)


# --- optimizers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", optim.SLOTS)
def test_update_equals_numpy_on_sparse_and_dense_gradients_and_clips_in_place(optimizer):
    rng = np.random.default_rng(5)
    params = {"a": rng.standard_normal(1000).astype(np.float32), "E": rng.standard_normal((7, 3)).astype(np.float32)}
    outcomes = []
    for kernels in (NUMPY, NUMBA):
        trained = {name: value.copy() for name, value in params.items()}
        state = optim.init_state(optimizer, trained)
        for step in range(3):
            grads = {
                "a": (np.random.default_rng(step).standard_normal(1000) * 3).astype(np.float32),
                "E": ops.SparseRows(np.array([1, 4]), np.array([[9.0, -0.5, 2.0], [-8.0, 1.0, 0.0]], dtype=np.float32)),
            }
            kernels.optimizer_update(optimizer, trained, grads, state, learning_rate=0.1, clip=5.0)
        outcomes.append((trained, state, grads))
    (trained, state, grads), (trained_c, state_c, grads_c) = outcomes
    for name in params:
        np.testing.assert_allclose(trained_c[name], trained[name], rtol=1e-6, atol=1e-7)
    for key in state:
        np.testing.assert_allclose(state_c[key], state[key], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(grads_c["a"], grads["a"])  # clipped in place, as numpy's np.clip(out=)
    assert np.abs(grads_c["a"]).max() == 5.0
    if optimizer == "adagrad":
        assert grads_c["E"].values.tolist() == [[5.0, -0.5, 2.0], [-5.0, 1.0, 0.0]]
        assert (state_c["sum_sq.E"][[0, 2, 3, 5, 6]] == 0).all()  # rows the gradient does not touch


@pytest.mark.parametrize("optimizer", optim.SLOTS)
def test_update_flushes_what_would_become_subnormal_as_a_flushing_processor_does(optimizer):
    tiny = np.finfo(np.float32).tiny
    param = np.ones(4, dtype=np.float32)
    state = optim.init_state(optimizer, {"w": param})
    # Squares below the smallest normal float count as zero: (1e-20)² = 1e-40 would be subnormal.
    NUMBA.optimizer_update(optimizer, {"w": param}, {"w": np.array([1e-20, 1e-10, 0, 0], np.float32)}, state, learning_rate=0.01)
    square_slot = state[f"{optim.SLOTS[optimizer][-1]}.w"]
    assert square_slot[0] == 0 and square_slot[1] > 0
    # Averages that decay where the gradient stays zero drop from just above it to zero, never below it.
    for slot in optim.SLOTS[optimizer]:
        state[f"{slot}.w"][2] = 1.01 * tiny  # Adam's v (β2 = 0.999) falls below tiny within 11 steps
    for _ in range(30):
        NUMBA.optimizer_update(optimizer, {"w": param}, {"w": np.zeros(4, np.float32)}, state, learning_rate=0.01)
    for slot in optim.SLOTS[optimizer]:
        magnitudes = np.abs(state[f"{slot}.w"])
        assert ((magnitudes == 0) | (magnitudes >= tiny)).all(), slot
        if optimizer != "adagrad":  # Adagrad's sum never decays
            assert magnitudes[2] == 0, slot


# --- training runs, reproducibility and selection ------------------------------------------------------------


def _train(kernels, steps=6, **model_options):
    text = "the quick brown fox jumps over the lazy dog. " * 20
    vocab = sorted(set(text))
    ids = np.array([vocab.index(ch) for ch in text])
    # 8 streams: the compiled cells run them as two halves on two threads where there are two cores.
    config = TrainConfig(seq_length=8, batch_size=8, learning_rate=0.05, max_steps=steps, rng_seed=3, optimizer="adam")
    model_config = ModelConfig(vocab_size=len(vocab), hidden_size=16, **model_options)
    trainee = loop.new_trainee(model_config, config, kernels)
    streams = ids[: 8 * (len(ids) // 8)].reshape(8, -1)
    losses = [result.loss_nats for result in loop.train_steps(trainee, streams, config)]
    return losses, trainee


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("embed_size", [0, 6])
def test_a_seeded_compiled_run_is_bit_identical_twice_and_close_to_numpy(cell, embed_size):
    options = dict(cell=cell, num_layers=2, dropout=0.2, embed_size=embed_size)
    losses, trainee = _train(NUMBA, **options)
    again, trainee_again = _train(NUMBA, **options)
    assert losses == again
    for name, value in trainee.params.items():
        assert np.array_equal(value, trainee_again.params[name]), name
    reference, _ = _train(NUMPY, **options)
    np.testing.assert_allclose(losses, reference, rtol=1e-5)
    assert trainee.kernels is NUMBA


def test_select_names_the_backend_and_auto_prefers_numba():
    assert backend.select("numpy") is NUMPY and NUMPY.name == "numpy"
    assert backend.select("numba").name == "numba"
    assert backend.select("auto").name == "numba"
    assert backend.select().name == "numba"
    with pytest.raises(ConfigError, match="one of auto, numpy, numba; got 'fast'"):
        backend.select("fast")


def test_without_numba_auto_falls_back_to_numpy_and_numba_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # makes "import numba" raise ImportError
    monkeypatch.setitem(sys.modules, "charrnn.model.compiled.cells", None)  # as if numba would not import
    monkeypatch.delattr("charrnn.model.compiled.cells", raising=False)
    assert backend.select("auto") is NUMPY
    with pytest.raises(ConfigError, match=re.escape(extra_hint("fast"))):
        backend.select("numba")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_bidirectional_model_on_the_compiled_kernels_equals_the_numpy_path(cell):
    # The backward stack runs the same cell kernels on the time-reversed tokens: both backends give the
    # same float64 loss and gradients (and a float32 run the same to float32 rounding).
    from charrnn.model import bidirectional

    for dtype, tolerance in (("float64", 1e-10), ("float32", 1e-4)):
        config, params, inputs, targets, hidden0 = _model_problem(dtype, cell=cell, activation="tanh", num_layers=2,
                                                                  dropout=0.3, embed_size=3)
        config = dataclasses.replace(config, bidirectional=True)
        params = network.init_params(config, np.random.default_rng(4), init_scale=0.5)
        ahead = np.random.default_rng(5).integers(config.vocab_size, size=(2, inputs.shape[1]))
        results = [bidirectional.loss_and_grads(params, config, inputs, targets, hidden0, np.random.default_rng(7),
                                                kernels=kernels, ahead=ahead) for kernels in (NUMPY, NUMBA)]
        assert results[1].loss_nats == pytest.approx(results[0].loss_nats, rel=tolerance)
        assert set(results[1].grads) == set(params)
        for name, grad in results[0].grads.items():
            np.testing.assert_allclose(_dense(results[1].grads[name]), _dense(grad), rtol=tolerance,
                                       atol=tolerance * 1e-2, err_msg=name)
