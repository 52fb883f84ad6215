"""Scoring text: totals match a direct computation; unknown tokens are counted, never dropped silently."""

from __future__ import annotations

import math

import numpy as np
import pytest

from charrnn.inference import scoring
from charrnn.model import network
from charrnn.config import ModelConfig
from charrnn.errors import VocabularyError
from charrnn.data.tokenizer import Tokenizer


def _model(vocab_size: int, cell: str = "gru"):
    config = ModelConfig(vocab_size=vocab_size, hidden_size=6, cell=cell, num_layers=2, dtype="float64")
    return config, network.init_params(config, np.random.default_rng(0), init_scale=0.5)


def test_one_stream_score_equals_the_step_by_step_loss():
    config, params = _model(7)
    ids = np.random.default_rng(1).integers(7, size=40)
    score = scoring.score_ids(params, config, ids, np.ones(7, dtype=np.int64), batch_size=1)
    state, total = network.initial_hidden(config, 1), 0.0
    for current, following in zip(ids[:-1], ids[1:]):
        logits, state = network.step(params, config, np.array([current]), state)
        total += float(np.log(np.exp(logits[0]).sum()) - logits[0, following])
    assert score.tokens_scored == 39 and score.characters_scored == 39
    assert score.total_nats == pytest.approx(total, rel=1e-12)
    assert score.bits_per_char == pytest.approx(total / 39 / math.log(2), rel=1e-12)
    assert score.perplexity == pytest.approx(math.exp(total / 39), rel=1e-12)


def test_without_warm_up_streams_score_every_token_once_each_from_a_fresh_state():
    config, params = _model(5, cell="rnn")
    ids = np.random.default_rng(2).integers(5, size=23)  # 22 targets over 4 streams of 6 (2 padded)
    score = scoring.score_ids(params, config, ids, np.ones(5, dtype=np.int64), batch_size=4, warmup_tokens=0)
    expected = 0.0
    for start in range(0, 22, 6):
        piece = ids[start : min(start + 7, 23)]
        expected += scoring.score_ids(params, config, piece, np.ones(5, dtype=np.int64), batch_size=1).total_nats
    assert score.tokens_scored == 22
    assert score.total_nats == pytest.approx(expected, rel=1e-12)


def test_each_stream_first_reads_the_text_before_its_part_without_scoring_it():
    config, params = _model(5, cell="gru")
    ids = np.random.default_rng(3).integers(5, size=41)  # 40 targets: 4 streams of 10, each warmed up on 3
    lengths = np.ones(5, dtype=np.int64)
    score = scoring.score_ids(params, config, ids, lengths, batch_size=4, warmup_tokens=3)
    expected = 0.0
    for start in range(0, 40, 10):
        state = network.initial_hidden(config, 1)
        if start:
            _, state = network.step(params, config, ids[start - 3 : start, None], state)  # the warm-up, unscored
        for current, following in zip(ids[start : start + 10], ids[start + 1 : start + 11]):
            logits, state = network.step(params, config, np.array([current]), state)
            expected += float(np.log(np.exp(logits[0]).sum()) - logits[0, following])
    assert score.tokens_scored == 40
    assert score.total_nats == pytest.approx(expected, rel=1e-12)


def test_streams_are_never_shorter_than_the_warm_up_so_the_batch_shrinks_for_short_texts():
    config, params = _model(5, cell="rnn")
    ids = np.random.default_rng(4).integers(5, size=31)
    lengths = np.ones(5, dtype=np.int64)
    one_pass = scoring.score_ids(params, config, ids, lengths, batch_size=1)
    # 30 targets with a warm-up of 500: a single stream, whatever the batch size asked for.
    assert scoring.score_ids(params, config, ids, lengths, batch_size=32).total_nats == one_pass.total_nats
    # Warm-ups of 10: three streams of 10.
    warmed = scoring.score_ids(params, config, ids, lengths, batch_size=32, warmup_tokens=10)
    assert warmed.tokens_scored == 30 and warmed.total_nats == pytest.approx(
        scoring.score_ids(params, config, ids, lengths, batch_size=3, warmup_tokens=10).total_nats, rel=1e-12)


def test_text_that_is_mostly_unknown_gets_a_warning():
    tokenizer, _ = Tokenizer.fit("明月光", "char")
    config, params = _model(3)
    score = scoring.score_text(params, config, tokenizer, "hello 明月 world", batch_size=1)
    assert (score.tokens_unknown, score.tokens_scored) == (12, 1)
    assert score.unknown_share == pytest.approx(12 / 14)
    assert scoring.unknown_warning(score) == (
        "12 of the text's 14 tokens (86%) are outside the model's vocabulary and left out: the score covers only "
        "the rest, and flatters the model on this text")
    clean = scoring.score_text(params, config, tokenizer, "明月光" * 10, batch_size=1)
    assert clean.unknown_share == 0 and scoring.unknown_warning(clean) is None


def test_bits_per_char_of_a_word_model_divides_by_characters():
    tokenizer, ids = Tokenizer.fit("明月光明月光 明月光", "jieba")
    config, params = _model(tokenizer.vocab_size, cell="lstm")
    score = scoring.score_ids(params, config, ids, tokenizer.token_lengths(), batch_size=1)
    characters = sum(len(tokenizer.vocab[i]) for i in ids[1:])
    assert score.characters_scored == characters > score.tokens_scored
    assert score.bits_per_char == pytest.approx(score.total_nats / math.log(2) / characters)


def test_unknown_tokens_are_counted_and_left_out():
    tokenizer, _ = Tokenizer.fit("abcab", "char")
    config, params = _model(3)
    score = scoring.score_text(params, config, tokenizer, "abxcyyab", batch_size=2)
    assert score.tokens_unknown == 3
    assert score.tokens_scored == 4  # "abcab" with the unknown x, y, y left out: 5 tokens, 4 scored
    with pytest.raises(VocabularyError, match="none of the text can be scored: it has 1 token"):
        scoring.score_text(params, config, tokenizer, "xyzazz", batch_size=2)
