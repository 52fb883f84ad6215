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


def test_streams_score_every_token_once_each_from_a_fresh_state():
    config, params = _model(5, cell="rnn")
    ids = np.random.default_rng(2).integers(5, size=23)  # 22 targets over 4 streams of 6 (2 padded)
    score = scoring.score_ids(params, config, ids, np.ones(5, dtype=np.int64), batch_size=4)
    expected = 0.0
    for start in range(0, 22, 6):
        piece = ids[start : min(start + 7, 23)]
        expected += scoring.score_ids(params, config, piece, np.ones(5, dtype=np.int64), batch_size=1).total_nats
    assert score.tokens_scored == 22
    assert score.total_nats == pytest.approx(expected, rel=1e-12)


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
