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


def test_text_longer_than_a_window_is_scored_window_after_window_in_streams_of_the_window_length(monkeypatch):
    monkeypatch.setattr(scoring, "WINDOW_TOKENS", 8)  # batch 2: streams of 4 targets, two at a time
    config, params = _model(5, cell="rnn")
    ids = np.random.default_rng(3).integers(5, size=20)  # 19 targets: 1-4, 5-8 | 9-12, 13-16 | 17-19
    lengths = np.ones(5, dtype=np.int64)
    # Without a warm-up every stream starts from the zero state at its first target.
    score = scoring.score_ids(params, config, ids, lengths, batch_size=2, warmup_tokens=0)
    expected = sum(scoring.score_ids(params, config, ids[start : start + 5], lengths, batch_size=1).total_nats
                   for start in range(0, 19, 4))
    assert score.tokens_scored == 19 and score.total_nats == pytest.approx(expected, rel=1e-12)
    # Text that fits in one window is cut into --batch-size equal streams, as before windows existed.
    short = scoring.score_ids(params, config, ids[:9], lengths, batch_size=2, warmup_tokens=0)
    assert short.total_nats == pytest.approx(
        sum(scoring.score_ids(params, config, ids[s : s + 5], lengths, batch_size=1).total_nats for s in (0, 4)),
        rel=1e-12)


def _stream_nats(params, config, ids, read_from: int, first_input: int, end_input: int) -> float:
    """Nats of the targets of inputs first_input ... end_input − 1, one stream reading from read_from."""
    inputs, targets = ids[read_from:end_input], ids[read_from + 1 : end_input + 1]
    losses, _ = network.token_losses(params, config, inputs[:, None], targets[:, None], network.initial_hidden(config, 1))
    return float(losses[first_input - read_from :].sum())


def test_every_window_keeps_the_text_before_it_for_its_streams_warm_up(monkeypatch):
    monkeypatch.setattr(scoring, "WINDOW_TOKENS", 8)  # batch 2: streams of 4 targets, two at a time
    config, params = _model(5, cell="rnn")
    ids = np.random.default_rng(3).integers(5, size=20)
    lengths = np.ones(5, dtype=np.int64)
    score = scoring.score_ids(params, config, ids, lengths, batch_size=2, warmup_tokens=3)
    # (read from, first input scored, end): the text's first stream has nothing before it; every other
    # stream reads the 3 tokens before its part, across windows too; the last 3 targets form one stream.
    streams = [(0, 0, 4), (1, 4, 8), (5, 8, 12), (9, 12, 16), (13, 16, 19)]
    expected = sum(_stream_nats(params, config, ids, *stream) for stream in streams)
    assert score.tokens_scored == 19 and score.total_nats == pytest.approx(expected, rel=1e-12)
    # The same text arriving in blocks of any size gives the same score.
    blocks = [ids[start : start + 3] for start in range(0, 20, 3)]
    in_blocks = scoring.score_id_blocks(params, config, blocks, lengths, batch_size=2, warmup_tokens=3)
    assert in_blocks.total_nats == pytest.approx(score.total_nats, rel=1e-12)


@pytest.mark.parametrize("kind", ["char", "jieba"])
def test_scoring_a_file_as_it_is_read_equals_scoring_it_whole(tmp_path, monkeypatch, kind):
    """eval reads its text in chunks and scores it a window at a time, carrying each stream's state from
    chunk to chunk, so that memory is bounded for text of any length: the score is that of the whole
    text at once, however the chunks and windows fall."""
    from charrnn.data import tokenizer as tokenizers
    from charrnn.data.corpus import TextReader
    from conftest import TANG300

    text = TANG300.read_text(encoding="utf-8")[:6000]
    corpus = tmp_path / "poems.txt"
    corpus.write_text(text, encoding="utf-8")
    tokenizer, _ = Tokenizer.fit(text[:4000], kind)  # the rest holds tokens it lacks: left out, counted
    config, params = _model(tokenizer.vocab_size, cell="lstm")
    whole = scoring.score_text(params, config, tokenizer, text, batch_size=3)
    monkeypatch.setattr(scoring, "WINDOW_TOKENS", 300)  # many windows (and, below, many chunks)
    monkeypatch.setattr(tokenizers, "JIEBA_PIECE_CHARS", 500)
    windowed_whole = scoring.score_text(params, config, tokenizer, text, batch_size=3)
    streamed = scoring.score_chunks(params, config, tokenizer, TextReader(str(corpus), chunk_bytes=997).chunks(),
                                    batch_size=3)
    assert streamed.tokens_unknown == whole.tokens_unknown > 0
    assert (streamed.tokens_scored, streamed.characters_scored) == (whole.tokens_scored, whole.characters_scored)
    assert streamed.total_nats == pytest.approx(windowed_whole.total_nats, rel=1e-12)
    # Windows only regroup the streams: the score barely moves (a few more tokens start from no context).
    assert streamed.loss_nats == pytest.approx(whole.loss_nats, rel=0.02)
