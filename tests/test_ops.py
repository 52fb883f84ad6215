"""The numpy building blocks around the cells: finite-difference checks and exact small cases."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn.model import ops
from charrnn.model.workspace import Workspace
from conftest import numeric_gradient, relative_error

def test_softmax_cross_entropy_value_and_gradient():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    targets = np.array([2, 0])
    loss, grad = ops.softmax_cross_entropy(logits.copy(), targets)
    expected = (-np.log(np.exp(3) / np.exp([1, 2, 3]).sum()) + np.log(3)) / 2
    assert loss == pytest.approx(expected, abs=1e-12)
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 7))
    targets = rng.integers(7, size=5)
    _, grad = ops.softmax_cross_entropy(logits.copy(), targets)
    numeric = numeric_gradient(lambda: ops.softmax_cross_entropy(logits.copy(), targets)[0], logits)
    assert relative_error(grad, numeric) < 1e-8


def test_softmax_cross_entropy_with_bias_and_threads_is_exact():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((900, 700)).astype(np.float32)
    bias = rng.standard_normal(700).astype(np.float32)
    targets = rng.integers(700, size=900)
    expected_loss, expected = ops.softmax_cross_entropy(logits + bias, targets)
    loss, grad = ops.softmax_cross_entropy(logits.copy(), targets, bias, Workspace(threads=3).run_blocks)
    assert loss == expected_loss and np.array_equal(grad, expected)
    small_loss, _ = ops.softmax_cross_entropy(np.array([[0.0, 1.0]]), np.array([1]), np.array([1.0, 0.0]))
    assert small_loss == pytest.approx(np.log(2))


def test_softmax_cross_entropy_in_place_and_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0], [0.0, -1000.0]], dtype=np.float32)
    loss, grad = ops.softmax_cross_entropy(logits, np.array([0, 0]))
    assert grad is logits
    assert loss == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(grad, [[0, 0], [0, 0]], atol=1e-6)


def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    upstream = rng.standard_normal((4, 5))

    def loss() -> float:
        return float((ops.linear_forward(x, w, b) * upstream).sum())

    d_x, d_w, d_b = ops.linear_backward(upstream, x, w)
    for analytic, array in [(d_x, x), (d_w, w), (d_b, b)]:
        assert relative_error(analytic, numeric_gradient(loss, array)) < 1e-8


def test_embedding_backward_sums_repeated_ids_into_sorted_rows():
    ids = np.array([[3, 1], [3, 0]])
    d_out = np.arange(8, dtype=np.float64).reshape(2, 2, 2)
    grad = ops.embedding_backward(d_out, ids)
    assert grad.rows.tolist() == [0, 1, 3]
    assert grad.values.tolist() == [[6.0, 7.0], [2.0, 3.0], [0.0 + 4.0, 1.0 + 5.0]]
    dense = grad.to_dense(5)
    assert dense.shape == (5, 2) and dense[2].tolist() == [0.0, 0.0] and dense[4].tolist() == [0.0, 0.0]


def test_cross_entropy_per_token_matches_the_mean_loss():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    targets = rng.integers(4, size=6)
    per_token = ops.cross_entropy_per_token(logits, targets)
    assert per_token.dtype == np.float64 and per_token.shape == (6,)
    assert per_token.mean() == pytest.approx(ops.softmax_cross_entropy(logits.copy(), targets)[0], rel=1e-6)


def test_dropout_mask_is_inverted_and_seeded():
    mask = ops.dropout_mask((200, 100), 0.25, np.random.default_rng(0), np.float32)
    assert mask.dtype == np.float32
    assert np.unique(mask).tolist() == [0.0, np.float32(1 / 0.75)]
    assert (mask == 0).mean() == pytest.approx(0.25, abs=0.01)
    assert mask.mean() == pytest.approx(1.0, abs=0.02)  # expected activation unchanged
    assert np.array_equal(mask, ops.dropout_mask((200, 100), 0.25, np.random.default_rng(0), np.float32))


# --- each fused kernel against its plain twin ----------------------------------------------------------


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_the_fused_softmax_equals_its_plain_twin(with_bias, threads):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((37, 11)) * 30  # some rows far beyond the range that needs no shift
    targets = rng.integers(11, size=37)
    bias = rng.standard_normal(11) if with_bias else None
    expected_loss, expected = ops.softmax_cross_entropy_plain(logits, targets, bias)
    loss, grad = ops.softmax_cross_entropy(logits.copy(), targets, bias, Workspace(threads=threads).run_blocks)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    # The fused kernel raises probabilities below e^-60 of their row's largest to that floor (it
    # keeps them out of the subnormal range): a difference below e^-60 / N, by design.
    np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=np.exp(-ops.EXP_RANGE) / len(targets))


@pytest.mark.parametrize("vocab", [9, 4])  # 24 ids: few repeats (sorted sums), many (one-hot product)
def test_the_sorted_embedding_gradient_equals_its_plain_twin(vocab):
    rng = np.random.default_rng(5)
    ids = rng.integers(vocab, size=(6, 4))  # repeats, and (with 9) tokens that never occur
    d_out = rng.standard_normal((6, 4, 3))
    sparse = ops.embedding_backward(d_out, ids)
    np.testing.assert_allclose(sparse.to_dense(vocab), ops.embedding_backward_plain(d_out, ids, vocab), rtol=1e-12)
    assert sparse.rows.tolist() == sorted(set(ids.reshape(-1).tolist()))
    distinct = len(sparse.rows)
    assert (ids.size >= ops.ONE_HOT_REPEATS * distinct) == (vocab == 4)  # each case takes the path it names


def test_a_large_batch_of_repeated_ids_is_summed_without_a_huge_one_hot_matrix(monkeypatch):
    rng = np.random.default_rng(6)
    ids = rng.integers(40, size=(50, 8))  # 400 rows, 40 ids: repeated enough for the one-hot product
    d_out = rng.standard_normal((50, 8, 2))
    monkeypatch.setattr(ops, "ONE_HOT_MAX_ELEMENTS", 400 * 40 - 1)  # one element short: the sorted sums
    monkeypatch.setattr(np, "equal", None)  # the one-hot path would need np.equal.outer
    sparse = ops.embedding_backward(d_out, ids)
    monkeypatch.undo()
    np.testing.assert_allclose(sparse.to_dense(40), ops.embedding_backward_plain(d_out, ids, 40), rtol=1e-12)
