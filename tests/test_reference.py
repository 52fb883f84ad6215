"""The learner's one-file model (charrnn/model/reference.py) is the model charrnn trains, to the last bit
of float64: the same loss, every gradient, the same Adagrad step, the same run."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.checkpoints import checkpoint
from charrnn.cli import cli
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


def test_a_seed_gives_the_weights_charrnn_starts_from():
    config = ModelConfig(vocab_size=V, hidden_size=H, dtype="float64", embed_size=0)
    train_config = TrainConfig(max_steps=1)
    ours = network.init_params(config, np.random.default_rng(11), *train_config.initial_scales(config))
    theirs = reference.init_params(V, H, np.random.default_rng(11))
    for name, expected in _column_params(ours).items():
        np.testing.assert_array_equal(theirs[name], expected, err_msg=name)


def _docstring_command() -> list[str]:
    """The charrnn command that the reference's docstring says trains the same model, as arguments."""
    text = reference.__doc__.split("charrnn train ", 1)[1].split("\n\n", 1)[0]
    return ["train", *shlex.split(text.replace("\\\n", " "))]


def test_the_docstring_names_the_charrnn_command_that_trains_the_same_model(tmp_path):
    corpus = tmp_path / "fox.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 8, encoding="utf-8")
    args = _docstring_command()
    assert args[1] == "corpus.txt"
    given = dict(zip(args[2::2], args[3::2]))
    # Smaller than the docstring's example, the same in both programs.
    given.update({"--hidden-size": "12", "--steps": "30", "--rng-seed": "3"})
    argv = [str(corpus)] + [item for pair in given.items() for item in pair]
    result = CliRunner().invoke(cli, ["train", *argv, "--backend", "numpy", "--json", "-q",
                                      "--checkpoint-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)

    ids_text = corpus.read_text(encoding="utf-8")
    vocab = sorted(set(ids_text))
    ids = np.array([vocab.index(c) for c in ids_text])
    trainer = reference.Trainer(len(vocab), 12, seq_length=int(given["--seq-length"]),
                                learning_rate=float(given["--learning-rate"]), clip=float(given["--clip"]), seed=3)
    average = 0.0
    for step in range(30):
        average, smoothed = reference.smoothed_loss(average, step, trainer.train_step(ids))
    assert summary["steps"] == 30 and summary["tokens"] == 30 * int(given["--seq-length"])
    assert summary["train_loss_nats"] == pytest.approx(smoothed, rel=1e-9)
    ckpt = checkpoint.load(str(tmp_path / "run" / "latest.npz"))
    for name, expected in _column_params(ckpt.params).items():
        np.testing.assert_allclose(trainer.params[name], expected, rtol=1e-8, atol=1e-12, err_msg=name)


def test_the_reference_runs_on_its_own_like_min_char_rnn(tmp_path):
    corpus = tmp_path / "fox.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 40, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "charrnn.model.reference", str(corpus), "--steps", "60", "--print-every", "20",
         "--hidden-size", "24", "--sample-length", "30", "--seed", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    head, _, log = run.stdout.partition("\n")
    assert head == f"{corpus}: 1,760 characters, 28 distinct; hidden 24, sequence 25, learning rate 0.1, seed 1"
    # Like min-char-rnn: the loss, then a sample between two lines of dashes (the text may hold newlines).
    blocks = re.findall(r"step (\d+): loss (\d+\.\d{4}) nats/token\n----\n(.{30})\n----\n", log, re.S)
    assert "".join(f"step {s}: loss {loss} nats/token\n----\n{text}\n----\n" for s, loss, text in blocks) == log
    assert [int(step) for step, _, _ in blocks] == [20, 40, 60]
    assert all(set(text) <= set("the quick brown fox jumps over the lazy dog\n") for _, _, text in blocks)
    losses = [float(loss) for _, loss, _ in blocks]
    # A uniform guess among 28 characters costs ln 28 = 3.33 nats; a sentence said 40 times is learnt.
    assert losses[0] < 3.33 and losses[2] < losses[0] / 2


def test_the_reference_refuses_bad_input_with_a_usage_error(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("abc", encoding="utf-8")
    for args, message in (([str(short)], "has 3 characters, fewer than --seq-length + 1 = 26"),
                          ([str(tmp_path / "missing.txt")], "cannot read"),
                          ([str(short), "--steps", "0"], "--steps must be positive, got 0")):
        run = subprocess.run([sys.executable, "-m", "charrnn.model.reference", *args], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2 and run.stdout == "" and message in run.stderr.splitlines()[-1], run.stderr


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
