"""Property: any small model with any vocabulary (arbitrary Unicode) survives save → load exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.checkpoints import checkpoint, folder_files
from charrnn.model import network, optim
from charrnn.training import loop
from charrnn.checkpoints.checkpoint import Checkpoint, CorpusInfo
from charrnn.config import CELLS, OPTIMIZERS, ModelConfig, TrainConfig
from charrnn.data.tokenizer import UNKNOWN_TOKEN, Tokenizer

# Characters JSON and UTF-8 can carry: everything but lone surrogates (which no decoded text holds).
characters = st.characters(blacklist_categories=("Cs",))


@st.composite
def tokenizers(draw) -> Tokenizer:
    if draw(st.booleans()):
        vocab = draw(st.sets(characters, min_size=1, max_size=12))
        kind = "char"
    else:
        vocab = draw(st.sets(st.text(characters, min_size=1, max_size=6), min_size=1, max_size=12))
        kind = "jieba"
    unknown = UNKNOWN_TOKEN if draw(st.booleans()) and UNKNOWN_TOKEN not in vocab else None
    tokens = sorted(set(vocab) | ({unknown} if unknown else set()))
    return Tokenizer(kind, tuple(tokens), unknown)


@st.composite
def checkpoints(draw) -> Checkpoint:
    tokenizer = draw(tokenizers())
    model_config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=draw(st.integers(1, 4)),
        num_layers=draw(st.integers(1, 3)),
        cell=draw(st.sampled_from(CELLS)),
        dtype=draw(st.sampled_from(["float32", "float64"])),
        embed_size=draw(st.sampled_from([0, None, 2])),
    )
    train_config = TrainConfig(
        batch_size=draw(st.integers(1, 3)), max_steps=draw(st.integers(1, 10**9)),
        optimizer=draw(st.sampled_from(OPTIMIZERS)), rng_seed=draw(st.integers(0, 2**32 - 1)),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    params = network.init_params(model_config, rng, init_scale=1.0)
    state = optim.init_state(train_config.optimizer, params)
    for name, value in state.items():
        if name != "step":
            value[...] = rng.standard_normal(value.shape)
            if name.startswith(("sum_sq.", "mean_sq.", "v.")):  # sums and means of squares: never negative
                np.abs(value, out=value)
    hidden = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in
              network.initial_hidden(model_config, train_config.batch_size).items()}
    progress = loop.Progress(step=draw(st.integers(0, 10**9)), tokens_seen=draw(st.integers(0, 2**62)),
                              loss_ema=draw(st.floats(0, 1e6)), loss_ema_steps=draw(st.integers(0, 10**6)))
    paths = tuple(draw(st.lists(st.text(characters, min_size=1, max_size=20), max_size=3)))
    corpus = CorpusInfo(paths, ("utf-8",) * len(paths), draw(st.integers(0, 10**12)), "f" * 64)
    return Checkpoint(model_config, train_config, tokenizer, params, state, hidden, progress,
                      rng.bit_generator.state, corpus, draw(st.text("0123456789abcdef", min_size=16, max_size=16)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(original=checkpoints())
def test_save_then_load_is_exact(tmp_path, original):
    loaded = checkpoint.load(folder_files.save(original, str(tmp_path)))
    assert loaded.model_config == original.model_config
    assert loaded.train_config == original.train_config
    assert loaded.tokenizer == original.tokenizer and loaded.tokenizer.unknown == original.tokenizer.unknown
    assert loaded.progress == original.progress
    assert loaded.rng_state == original.rng_state
    assert loaded.corpus == original.corpus
    for group in ("params", "optimizer_state", "hidden"):
        first, second = getattr(original, group), getattr(loaded, group)
        assert list(first) == list(second)
        for name in first:
            assert first[name].dtype == second[name].dtype
            assert np.array_equal(first[name], second[name])
    assert checkpoint.to_bytes(loaded) == checkpoint.to_bytes(original)
