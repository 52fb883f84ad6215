"""The spread validation split: blocks of whole lines across the corpus, the same on every resume."""

from __future__ import annotations

import json

import numpy as np
from charrnn.checkpoints import checkpoint
from charrnn.config import TrainConfig
from charrnn.data import streams as streams_module
from charrnn.data.streams import SegmentStreams, gather_segments, spread_block_tokens, spread_split, split_streams
from charrnn.training import corpus_data
from test_cli import FAST, invoke

LINE_END = 9


def _lines(count: int, length: int) -> np.ndarray:
    """``count`` lines of ``length`` tokens (ids 0-8 cycling), each ended by LINE_END."""
    line = [i % 9 for i in range(length - 1)] + [LINE_END]
    return np.array(line * count, dtype=np.uint8)


def test_held_out_blocks_end_at_line_ends_and_are_every_twentieth_block():
    ids = _lines(400, 10)  # 4,000 tokens in lines of 10
    train, held = spread_split(ids, 0.05, 100, LINE_END, seed=0)
    blocks = np.concatenate([train, held])
    # Every block but the corpus's last ends right after a line end, and together they tile the corpus.
    cuts = sorted(int(stop) for stop in blocks[:, 1])
    assert all(ids[cut - 1] == LINE_END for cut in cuts)
    covered = np.zeros(len(ids), dtype=int)
    for start, stop in blocks:
        covered[start:stop] += 1
    assert (covered == 1).all()
    # 40 blocks of 100 tokens, one in 20 held out: 2, twenty blocks apart.
    assert len(held) == 2 and held[1, 0] - held[0, 0] == 2000
    assert (held[:, 1] - held[:, 0] == 100).all()


def test_the_split_depends_only_on_its_inputs_and_its_seed_moves_it():
    ids = _lines(400, 10)
    first = spread_split(ids, 0.05, 100, LINE_END, seed=0)
    again = spread_split(ids.copy(), 0.05, 100, LINE_END, seed=0)
    assert all((a == b).all() for a, b in zip(first, again))
    phases = {int(spread_split(ids, 0.05, 100, LINE_END, seed=seed)[1][0, 0]) for seed in range(10)}
    assert len(phases) > 1


def test_long_lines_are_cut_where_the_block_ends_and_a_text_without_line_ends_too():
    ids = np.arange(1000) % 7  # no line end at all
    train, held = spread_split(ids, 0.1, 50, None, seed=3)
    assert held[:, 0].tolist() in ([i, i + 500] for i in range(0, 500, 50))  # 2 of 20 blocks of 50, 10 apart
    assert (held[:, 1] - held[:, 0] == 50).all()
    lines = np.array(([1] * 300 + [LINE_END]) * 4)  # lines of 301 tokens: longer than the blocks of 50
    _, held = spread_split(lines, 0.99, 50, LINE_END, seed=3)  # nearly every block held out, unmerged
    assert held[:8, 1].tolist() == [50, 100, 150, 200, 250, 301, 350, 400]  # 301: the line end at 300


def test_block_length_aims_at_a_hundred_blocks_within_bounds():
    assert spread_block_tokens(2_000_000, 0.05) == 1_000  # 100,000 held out in 100 blocks
    assert spread_block_tokens(1_000_000_000, 0.05) == streams_module.MAX_BLOCK_TOKENS
    assert spread_block_tokens(30_000, 0.05) == streams_module.MIN_BLOCK_TOKENS
    assert spread_block_tokens(1_000, 0.05) == 12  # tiny: at least four blocks held out (50 / 4, rounded)


def test_segment_streams_read_like_the_streams_of_the_joined_training_text():
    ids = np.arange(1000, dtype=np.int64)
    segments = np.array([[0, 100], [150, 600], [640, 1000]])
    joined = np.concatenate([ids[a:b] for a, b in segments])
    expected = split_streams(joined, 4, 5)
    streams = SegmentStreams(ids, segments, 4, 5)
    assert streams.shape == expected.shape and streams.size == expected.size
    for start in (0, 3, 40, expected.shape[1] - 6):
        np.testing.assert_array_equal(streams[:, start : start + 6], expected[:, start : start + 6])


def test_gathering_a_limited_validation_set_takes_blocks_from_all_over():
    ids = np.arange(10_000)
    held = np.array([[i, i + 100] for i in range(0, 10_000, 1000)])  # 10 blocks of 100
    assert len(gather_segments(ids, held)) == 1000
    some = gather_segments(ids, held, limit=300)
    assert len(some) == 300 and some[0] == 0 and some.max() >= 6000  # every 4th block: 0, 4000, 8000


def test_prepare_streams_settles_the_block_length_and_says_what_it_held_out():
    ids = _lines(2000, 10)
    notes: list[str] = []
    config = TrainConfig(max_steps=1, batch_size=4, seq_length=5)
    data = corpus_data.prepare_streams(ids, None, config, False, notes, LINE_END)
    assert data.config.val_block_tokens == 100 and data.config.val_split == "spread"
    assert data.num_train_tokens + len(data.val_ids) == len(ids) == 20_000
    assert len(data.val_ids) == 1000
    assert data.validation == ("1,000 tokens (5%) held out in 10 blocks of whole lines spread across the corpus "
                               "(--val-split spread)")
    tail = corpus_data.prepare_streams(ids, None, TrainConfig(max_steps=1, val_split="tail"), False, notes)
    np.testing.assert_array_equal(tail.val_ids, ids[-1000:])
    assert tail.validation == "the last 5% of the corpus (1,000 tokens; --val-split tail)"




def test_the_split_is_stated_recorded_in_the_checkpoint_and_cut_again_on_resume(tmp_path, small_corpus):
    first = invoke("train", small_corpus, "--steps", "4", *FAST, "--checkpoint-dir", tmp_path / "ck", "--backend", "numpy")
    assert first.exit_code == 0, first.stderr
    assert "validation: 143 tokens (5%) held out in 4 blocks of whole lines spread across the corpus" in first.stderr
    ckpt = checkpoint.load(str(tmp_path / "ck" / "latest.npz"))
    assert ckpt.train_config.val_split == "spread" and ckpt.train_config.val_block_tokens == 38
    assert ckpt.corpus.num_train_tokens == 3000 - 143
    resumed = invoke("train", "--resume", tmp_path / "ck", "--steps", "8", "--backend", "numpy")
    assert resumed.exit_code == 0, resumed.stderr
    assert "validation: 143 tokens (5%) held out in 4 blocks" in resumed.stderr
    info = invoke("info", tmp_path / "ck" / "latest.npz", "--json")
    assert json.loads(info.stdout)["validation"]["held_out"].startswith("5% of the corpus in blocks of about 38 tokens")
    conflict = invoke("train", "--resume", tmp_path / "ck", "--steps", "9", "--val-split", "tail")
    assert conflict.exit_code == 2 and "--val-split tail conflicts with the checkpoint, which has spread" in conflict.stderr


def test_tail_split_keeps_the_old_behaviour_and_val_file_excludes_val_split(tmp_path, small_corpus):
    tail = invoke("train", small_corpus, "--steps", "2", *FAST, "--val-split", "tail", "--checkpoint-dir", tmp_path / "t")
    assert tail.exit_code == 0, tail.stderr
    assert "validation: the last 5% of the corpus (150 tokens; --val-split tail)" in tail.stderr
    both = invoke("train", small_corpus, "--steps", "2", *FAST, "--val-split", "tail", "--val-file", small_corpus,
                   "--checkpoint-dir", tmp_path / "b")
    assert both.exit_code == 2 and "give --val-split or --val-file, not both" in both.stderr
