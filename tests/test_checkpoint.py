"""Checkpoints: exact round trips, byte-for-byte determinism, atomic writes, and refusing bad files."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint, folder_files, metadata
from charrnn.training import loop
from charrnn.checkpoints.checkpoint import Checkpoint, CorpusInfo
from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.streams import split_streams
from charrnn.errors import CheckpointError, CheckpointWriteError, ConfigError
from charrnn.data.tokenizer import Tokenizer


def _checkpoint(
    steps: int = 3, dtype: str = "float32", cell: str = "rnn", optimizer: str = "adagrad", embed_size: int = 0
) -> Checkpoint:
    tokenizer, ids = Tokenizer.fit("月落乌啼霜满天，江枫渔火对愁眠。\n" * 6, "char")
    model_config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=8, dtype=dtype, cell=cell, num_layers=2,
                               embed_size=embed_size)
    train_config = TrainConfig(seq_length=4, batch_size=2, max_steps=10, rng_seed=11, optimizer=optimizer)
    trainee = loop.new_trainee(model_config, train_config)
    for _ in range(steps):
        loop.train_step(trainee, split_streams(ids, 2, 4), train_config)
    return Checkpoint(
        model_config, train_config, tokenizer, trainee.params, trainee.optimizer_state, trainee.hidden, trainee.progress,
        trainee.rng.bit_generator.state, CorpusInfo(("poem.txt",), ("utf-8",), len(ids), "abc"),
        metadata.run_identity(model_config, train_config, tokenizer),
    )


def _assert_same(a: Checkpoint, b: Checkpoint) -> None:
    for group in ("params", "optimizer_state", "hidden"):
        first, second = getattr(a, group), getattr(b, group)
        assert list(first) == list(second)
        for name in first:
            assert np.array_equal(first[name], second[name]) and first[name].dtype == second[name].dtype
    assert (a.model_config, a.train_config, a.tokenizer, a.progress, a.rng_state, a.corpus) == (
        b.model_config, b.train_config, b.tokenizer, b.progress, b.rng_state, b.corpus
    )


@pytest.mark.parametrize(
    "dtype, cell, optimizer, embed_size",
    [("float32", "rnn", "adagrad", 0), ("float64", "lstm", "adam", 0), ("float32", "gru", "rmsprop", 0),
     ("float32", "rnn", "adagrad", 5), ("float64", "gru", "adam", 3)],
)
def test_save_load_round_trip_is_exact(tmp_path, dtype, cell, optimizer, embed_size):
    original = _checkpoint(dtype=dtype, cell=cell, optimizer=optimizer, embed_size=embed_size)
    latest = folder_files.save(original, str(tmp_path))
    assert latest == str(tmp_path / "latest.npz")
    assert (tmp_path / "step_00000003.npz").read_bytes() == (tmp_path / "latest.npz").read_bytes()
    _assert_same(original, checkpoint.load(latest))
    assert sorted(os.listdir(tmp_path)) == ["latest.npz", "step_00000003.npz"]  # no temp files left


def test_same_state_gives_identical_bytes_and_readable_json(tmp_path):
    assert checkpoint.to_bytes(_checkpoint()) == checkpoint.to_bytes(_checkpoint())
    path = folder_files.save(_checkpoint(), str(tmp_path))
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(archive["meta"].tobytes().decode("utf-8"))
    assert meta["format"] == "charrnn-checkpoint" and meta["format_version"] == 4
    assert meta["tokenizer"]["vocab"][0] == "\n" and "月" in meta["tokenizer"]["vocab"]
    assert meta["progress"]["step"] == 3 and meta["train"]["rng_seed"] == 11
    assert meta["model"] == {
        "vocab_size": 17, "embed_size": 0, "hidden_size": 8, "num_layers": 2, "cell": "rnn", "activation": "tanh",
        "dropout": 0.0, "dtype": "float32", "bidirectional": False,
    }
    assert sorted(archive_names(path)) == sorted(
        ["meta"]
        + [f"param.{n}" for n in ("W_xh", "W_hh", "b_h", "W_xh.1", "W_hh.1", "b_h.1", "W_hy", "b_y")]
        + [f"optim.sum_sq.{n}" for n in ("W_xh", "W_hh", "b_h", "W_xh.1", "W_hh.1", "b_h.1", "W_hy", "b_y")]
        + ["state.h.0", "state.h.1"]
    )


def archive_names(path):
    with np.load(path, allow_pickle=False) as archive:
        return archive.files


def test_find_latest(tmp_path):
    assert folder_files.find_latest(str(tmp_path)) is None
    (tmp_path / "step_00000002.npz").write_bytes(b"x")
    (tmp_path / "step_00000010.npz").write_bytes(b"x")
    (tmp_path / "step_00000009.npz").write_bytes(b"x")
    assert folder_files.find_latest(str(tmp_path)) == str(tmp_path / "step_00000010.npz")
    (tmp_path / "latest.npz").write_bytes(b"x")
    assert folder_files.find_latest(str(tmp_path)) == str(tmp_path / "latest.npz")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = folder_files.save(_checkpoint(steps=1), str(tmp_path))
    before = open(path, "rb").read()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointWriteError, match="No space left on device; the previous checkpoint is untouched"):
        folder_files.save(_checkpoint(steps=2), str(tmp_path))
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["latest.npz", "step_00000001.npz"]


def test_unwritable_directory_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write checkpoints to"):
        folder_files.prepare_directory(str(blocker / "sub"))


def _rewrite(path, change):
    """Rewrite the archive at ``path`` with ``change(entries)`` applied to its name → array dict."""
    with np.load(path, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    change(entries)
    buffer = io.BytesIO()
    np.savez(buffer, **entries)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def _set_meta(entries, **updates):
    meta = json.loads(entries["meta"].tobytes())
    meta.update(updates)
    entries["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: _set_meta(e, format_version=99), "format 99, newer than this charrnn"),
        (lambda e: _set_meta(e, format="other"), "not a charrnn checkpoint"),
        (lambda e: e.pop("meta"), "no metadata entry"),
        (lambda e: e.pop("param.W_hh"), r"missing \['param.W_hh'\]"),
        (lambda e: e.update({"param.W_hh": np.zeros((3, 3), np.float32)}), "entry param.W_hh has shape"),
        (lambda e: e.update({"extra": np.array([object()], dtype=object)}), "pickled Python objects"),
        (lambda e: e.update({"param.b_h": np.array([object()] * 8, dtype=object)}), "pickled Python objects"),
        (lambda e: _set_meta(e, model={"vocab_size": 17, "hidden_size": -8}), "hidden-size must be positive"),
        # A trained model records the rate it trained at; without one, it could not be resumed or shown.
        (lambda e: _set_meta(e, train={"max_steps": 10}), "train.learning_rate is missing"),
        (lambda e: _set_meta(e, model={"vocab_size": 17, "hidden_size": 8, "cell": "lstm", "num_layers": 2,
                                                "embed_size": 0}),
         r"missing \['state.c.0', 'state.c.1'\]"),
    ],
)
def test_bad_contents_are_refused(tmp_path, change, message):
    path = folder_files.save(_checkpoint(), str(tmp_path))
    _rewrite(path, change)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path)


def test_pickled_object_array_is_never_unpickled(tmp_path):
    path = folder_files.save(_checkpoint(), str(tmp_path))

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    _rewrite(path, lambda e: e.update({"param.b_h": np.array([Boom()], dtype=object)}))
    with pytest.raises(CheckpointError, match="refusing to load it"):
        checkpoint.load(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_checkpoint_is_refused(tmp_path, fraction):
    path = folder_files.save(_checkpoint(), str(tmp_path))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError):
        checkpoint.load(path)


def test_bit_flip_is_detected(tmp_path):
    path = folder_files.save(_checkpoint(), str(tmp_path))
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("param.W_hy.npy")
    data[info.header_offset + 200] ^= 0x10  # inside W_hy's data
    with open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(path)


def test_missing_and_non_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoint.load(str(tmp_path / "nope.npz"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not an .npz archive"):
        checkpoint.load(str(tmp_path / "notes.txt"))
    with pytest.raises(CheckpointError, match="is a directory"):
        checkpoint.load(str(tmp_path))


def test_progress_survives_the_round_trip(tmp_path):
    original = _checkpoint(steps=5)
    loaded = checkpoint.load(folder_files.save(original, str(tmp_path)))
    assert dataclasses.asdict(loaded.progress) == dataclasses.asdict(original.progress)
    assert loaded.progress.step == 5 and loaded.progress.tokens_seen == 40


FIXTURES = __import__("pathlib").Path(__file__).parent / "data"


def test_format_1_checkpoint_is_migrated_on_load():
    path = str(FIXTURES / "format1_rnn_h8_step7.npz")
    with np.load(path, allow_pickle=False) as raw:
        raw_entries = {name: raw[name] for name in raw.files}
    ckpt = checkpoint.load(path)
    assert ckpt.model_config == ModelConfig(vocab_size=ckpt.tokenizer.vocab_size, hidden_size=8, embed_size=0)
    assert ckpt.train_config.optimizer == "adagrad" and ckpt.train_config.val_fraction == 0.0
    assert ckpt.progress.step == 7 and ckpt.format_version == 1
    for name in ("W_xh", "W_hh", "b_h", "W_hy", "b_y"):
        assert np.array_equal(ckpt.params[name], raw_entries[f"param.{name}"])
        assert np.array_equal(ckpt.optimizer_state[f"sum_sq.{name}"], raw_entries[f"optim.{name}"])
    assert np.array_equal(ckpt.hidden["h.0"], raw_entries["state.hidden"])


def test_format_1_checkpoint_resaves_in_the_current_format(tmp_path):
    ckpt = checkpoint.load(str(FIXTURES / "format1_rnn_h8_step7.npz"))
    again = checkpoint.load(folder_files.save(ckpt, str(tmp_path)))
    _assert_same(ckpt, again)
    meta = json.loads(np.load(str(tmp_path / "latest.npz"))["meta"].tobytes())
    assert meta["format_version"] == checkpoint.FORMAT_VERSION == 4 and meta["model"]["embed_size"] == 0


FORMAT2 = FIXTURES / "format2_gru2_adam_h8_step7.npz"


def test_format_2_checkpoint_is_the_one_table_model_whatever_the_default_embedding():
    with np.load(str(FORMAT2), allow_pickle=False) as raw:
        raw_entries = {name: raw[name] for name in raw.files}
        meta = json.loads(raw["meta"].tobytes())
    assert meta["format_version"] == 2 and "embed_size" not in meta["model"]
    ckpt = checkpoint.load(str(FORMAT2))
    assert ckpt.format_version == 2
    assert ckpt.model_config == ModelConfig(vocab_size=20, hidden_size=8, num_layers=2, cell="gru", embed_size=0)
    assert ckpt.train_config.optimizer == "adam" and ckpt.progress.step == 7
    assert "W_xe" not in ckpt.params and ckpt.params["W_xh"].shape == (20, 24)
    for name, value in ckpt.params.items():
        assert np.array_equal(value, raw_entries[f"param.{name}"]), name
    for name, value in ckpt.optimizer_state.items():
        assert np.array_equal(value, raw_entries[f"optim.{name}"]), name


def test_format_2_checkpoint_resaves_in_the_current_format(tmp_path):
    ckpt = checkpoint.load(str(FORMAT2))
    again = checkpoint.load(folder_files.save(ckpt, str(tmp_path)))
    _assert_same(ckpt, again)
    meta = json.loads(np.load(str(tmp_path / "latest.npz"))["meta"].tobytes())
    assert meta["format_version"] == 4 and meta["model"]["embed_size"] == 0 and again.format_version == 4


def test_an_embedding_size_in_an_older_format_is_not_believed(tmp_path):
    # Formats 1 and 2 hold the one-table model; a (crafted) embed_size in one is overridden, not obeyed.
    with np.load(str(FORMAT2), allow_pickle=False) as raw:
        entries = {name: raw[name] for name in raw.files}
    meta = json.loads(entries["meta"].tobytes())
    meta["model"]["embed_size"] = 4
    entries["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "crafted.npz", **entries)
    assert checkpoint.load(str(tmp_path / "crafted.npz")).model_config.embed_size == 0


FORMAT3 = FIXTURES / "format3_lstm_embed4_h8_step7.npz"


def test_format_3_checkpoint_is_a_left_to_right_model_and_resaves_in_format_4(tmp_path):
    with np.load(str(FORMAT3), allow_pickle=False) as raw:
        raw_entries = {name: raw[name] for name in raw.files}
        meta = json.loads(raw["meta"].tobytes())
    assert meta["format_version"] == 3 and "bidirectional" not in meta["model"] and "look_ahead" not in meta["train"]
    ckpt = checkpoint.load(str(FORMAT3))
    assert ckpt.format_version == 3
    assert ckpt.model_config == ModelConfig(vocab_size=20, hidden_size=8, cell="lstm", embed_size=4)
    assert ckpt.model_config.bidirectional is False and ckpt.train_config.look_ahead == 0
    for name, value in ckpt.params.items():
        assert np.array_equal(value, raw_entries[f"param.{name}"]), name
    again = checkpoint.load(folder_files.save(ckpt, str(tmp_path)))
    _assert_same(ckpt, again)
    meta = json.loads(np.load(str(tmp_path / "latest.npz"))["meta"].tobytes())
    assert meta["format_version"] == 4 and meta["model"]["bidirectional"] is False and meta["train"]["look_ahead"] == 0
    assert again.run_id == ckpt.run_id  # a left-to-right model keeps the identity it had in format 3


def test_a_bidirectional_flag_in_an_older_format_is_not_believed(tmp_path):
    # Format 3 knew no backward stack: a (crafted) bidirectional flag in one is overridden, not obeyed.
    with np.load(str(FORMAT3), allow_pickle=False) as raw:
        entries = {name: raw[name] for name in raw.files}
    meta = json.loads(entries["meta"].tobytes())
    meta["model"]["bidirectional"] = True
    meta["train"]["look_ahead"] = 7
    entries["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = tmp_path / "crafted.npz"
    np.savez(str(path), **entries)
    ckpt = checkpoint.load(str(path))
    assert ckpt.model_config.bidirectional is False and ckpt.train_config.look_ahead == 0
