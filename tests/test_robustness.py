"""Bad input, tried for real through the command line: each ends in one clear line and the right exit
code, never a traceback, never a lost or overwritten checkpoint. Also interruptions, NaNs and failed
writes during training."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import zipfile

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint
from conftest import TANG300, sigint_at_default, wait_until
from test_cli import FAST, assert_clean_error, invoke, invoke_ok

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ffff3f0005fe02fea7d6a4c50000000049454e44ae426082")


def _train(corpus, *args):
    return invoke("train", corpus, "--steps", "3", *FAST, *args)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(PNG), "looks like a binary file"),
        (lambda p: p.write_bytes(gzip.compress(TANG300.read_bytes())), "looks like a binary file"),
        (lambda p: p.write_bytes("好的文本\n".encode() * 500 + b"\xff" + "更多\n".encode() * 500),
         "is not valid UTF-8 at byte 6500, though the text before it is"),
        (lambda p: p.write_bytes(("UTF-16 without a mark\n" * 50).encode("utf-16-le")),
         "if it is UTF-16 or UTF-32 without a byte-order mark, pass --encoding utf-16-le"),
        (lambda p: p.write_text("月"), "the corpus has 1 tokens"),
        (lambda p: p.mkdir(), "is a directory, not a text file"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "is empty"),
    ],
    ids=["png", "gzip", "invalid-utf8-in-the-middle", "utf16-without-bom", "one-token", "directory", "missing",
         "empty"],
)
def test_bad_corpora_are_refused(workdir, tmp_path, make, message):
    corpus = tmp_path / "corpus.txt"
    make(corpus)
    assert_clean_error(_train(corpus), 2, message)
    assert not (workdir / "checkpoints" / "poems" / "latest.npz").exists()


def test_utf16_with_bom_bom_utf8_and_mixed_line_endings_train(workdir, tmp_path):
    utf16, bom8, mixed = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    utf16.write_bytes(("床前明月光\r\n" * 60).encode("utf-16"))
    bom8.write_bytes(b"\xef\xbb\xbf" + ("疑是地上霜\n" * 60).encode())
    mixed.write_bytes(b"one\r\ntwo\rthree\n" * 40)
    result = _train(utf16, "--checkpoint-dir", "a")
    assert result.exit_code == 0, result.stderr
    assert checkpoint.load("a/latest.npz").corpus.encodings == ("utf-16",)
    assert _train(bom8, "--checkpoint-dir", "b").exit_code == 0
    assert "\ufeff" not in checkpoint.load("b/latest.npz").tokenizer.vocab
    assert _train(mixed, "--checkpoint-dir", "c").exit_code == 0
    assert "\r" not in checkpoint.load("c/latest.npz").tokenizer.vocab


def test_a_corpus_smaller_than_one_batch_shrinks_a_default_batch_and_refuses_an_explicit_one(workdir, tmp_path):
    corpus = tmp_path / "short.txt"
    corpus.write_text("白日依山尽，黄河入海流。\n" * 4, encoding="utf-8")  # 52 characters
    shrunk = invoke("train", corpus, "--steps", "2", "--hidden-size", "8", "--val-fraction", "0", "-q")
    assert shrunk.exit_code == 0
    assert checkpoint.load("checkpoints/short/latest.npz").train_config.batch_size == 2  # 52 // 26
    noted = invoke_ok("train", corpus, "--steps", "2", "--hidden-size", "8", "--val-fraction", "0",
                      "--checkpoint-dir", "other")
    assert "note: the corpus is too short for 32 streams of --seq-length 25; using --batch-size 2" in noted.stderr
    explicit = invoke("train", corpus, "--steps", "2", "--batch-size", "32", "--val-fraction", "0",
                      "--checkpoint-dir", "third")
    assert_clean_error(explicit, 2, "use a smaller --batch-size or --seq-length")


@pytest.fixture
def trained(workdir, small_corpus):
    assert invoke("train", small_corpus, "--steps", "4", *FAST).exit_code == 0
    return workdir / "checkpoints" / "poems" / "latest.npz"


@pytest.mark.parametrize("tenths", range(10))
def test_checkpoint_truncated_at_every_tenth_is_refused(trained, tenths):
    data = trained.read_bytes()
    trained.write_bytes(data[: len(data) * tenths // 10])
    assert_clean_error(invoke("sample", "-c", trained), 2, str(trained))


def test_a_bit_flipped_in_any_entry_is_detected(trained):
    original = trained.read_bytes()
    with zipfile.ZipFile(trained) as archive:
        entries = [(info.filename, info.header_offset, info.compress_size) for info in archive.infolist()]
    for name, offset, size in entries:
        damaged = bytearray(original)
        damaged[offset + 30 + len(name) + size // 2] ^= 0x04  # inside the entry's data
        trained.write_bytes(bytes(damaged))
        assert_clean_error(invoke("sample", "-c", trained), 2, "corrupt")


def _rewrite(path, change):
    with np.load(path, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    change(entries)
    np.savez(path, **entries)


def test_newer_format_and_object_arrays_are_refused(trained, tmp_path):
    def newer(entries):
        meta = json.loads(entries["meta"].tobytes())
        meta["format_version"] = 5
        entries["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    _rewrite(trained, newer)
    assert_clean_error(invoke("sample", "-c", trained), 2, "uses checkpoint format 5, newer than this charrnn")
    stranger = tmp_path / "stranger.npz"
    np.savez(stranger, meta=np.array([{"format": "charrnn-checkpoint"}], dtype=object))
    assert_clean_error(invoke("sample", "-c", stranger), 2, "refusing to load it (unpickling can run code)")


def test_sampling_option_edges(trained):
    assert_clean_error(invoke("sample", "--length", "0"), 2, "--length must be positive, got 0")
    assert_clean_error(invoke("sample", "--top-k", "-3"), 2, "--top-k must be positive, got -3")
    zero = invoke_ok("sample", "--seed", "春", "--temperature", "0", "--length", "12", "-q")
    greedy = invoke_ok("sample", "--seed", "春", "--greedy", "--length", "12", "-q", "--rng-seed", "99")
    assert zero.stdout == greedy.stdout


def test_nan_loss_stops_with_exit_1_and_keeps_the_last_checkpoint(workdir, small_corpus):
    assert invoke("train", small_corpus, "--steps", "2", *FAST).exit_code == 0
    before = (workdir / "checkpoints" / "poems" / "latest.npz").read_bytes()
    # Steps of 1e38 overflow float32 within a few updates: the weights become inf, the loss NaN.
    result = invoke("train", "--resume", "checkpoints/poems/latest.npz", "--steps", "50", "--learning-rate", "1e38")
    assert_clean_error(result, 1, "try a lower --learning-rate or a smaller --clip")
    assert "the loss became nan at step" in result.stderr
    assert (workdir / "checkpoints" / "poems" / "latest.npz").read_bytes() == before
    assert sorted(os.listdir(workdir / "checkpoints" / "poems")) == ["best.npz", "latest.npz", "step_00000002.npz"]


def test_a_write_failing_halfway_keeps_the_previous_checkpoint(workdir, small_corpus, monkeypatch):
    assert invoke("train", small_corpus, "--steps", "2", *FAST).exit_code == 0
    before = (workdir / "checkpoints" / "poems" / "latest.npz").read_bytes()
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    result = invoke("train", "--resume", "checkpoints/poems/latest.npz", "--steps", "4")
    assert_clean_error(result, 1, "No space left on device; the previous checkpoint is untouched")
    assert calls  # the data really was written, then failed to reach the disk
    assert (workdir / "checkpoints" / "poems" / "latest.npz").read_bytes() == before
    assert not [n for n in os.listdir(workdir / "checkpoints") if n.endswith(".tmp")]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders")
def test_a_read_only_checkpoint_folder(workdir, small_corpus):
    folder = workdir / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = invoke("train", small_corpus, "--steps", "2", *FAST, "--checkpoint-dir", folder)
        assert_clean_error(result, 2, "cannot write checkpoints to")
    finally:
        folder.chmod(0o755)


def test_a_checkpoint_folder_that_cannot_exist(workdir, small_corpus):
    (workdir / "a-file").write_text("x")
    result = invoke("train", small_corpus, "--steps", "2", *FAST, "--checkpoint-dir", workdir / "a-file" / "sub")
    assert_clean_error(result, 2, "cannot write checkpoints to")


def test_checkpoint_keep_removes_only_old_step_files(workdir, small_corpus):
    result = invoke("train", small_corpus, "--steps", "10", *FAST, "--checkpoint-every", "2", "--checkpoint-keep", "2",
                    "--eval-every", "3")
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(workdir / "checkpoints" / "poems")) == [
        "best.npz", "latest.npz", "step_00000008.npz", "step_00000010.npz"
    ]


def test_max_vocab_unknown_token_is_never_sampled_unless_allowed(workdir, small_corpus):
    result = invoke("train", small_corpus, "--steps", "5", *FAST, "--max-vocab", "20")
    assert result.exit_code == 0, result.stderr
    tokenizer = checkpoint.load("checkpoints/poems/latest.npz").tokenizer
    assert tokenizer.vocab_size == 21 and "<unk>" in tokenizer.vocab
    text = invoke_ok("sample", "--length", "300", "--rng-seed", "1", "--temperature", "3", "-q").stdout
    assert "<unk>" not in text
    allowed = invoke_ok("sample", "--length", "300", "--rng-seed", "1", "--temperature", "3", "--allow-unk", "-q").stdout
    assert "<unk>" in allowed
    conflict = invoke("train", "--resume", "checkpoints/poems/latest.npz", "--max-vocab", "50", "--steps", "6")
    assert_clean_error(conflict, 2, "--max-vocab 50 conflicts with the checkpoint, which has 20")


def test_prepare_then_train_uses_the_cache(workdir, small_corpus):
    prepared = invoke("prepare", small_corpus)
    assert prepared.exit_code == 0, prepared.stderr
    path = prepared.stdout.strip()
    assert path.startswith(os.path.join("data", ".cache")) and path.endswith(".npy") and os.path.exists(path)
    assert "prepared 0.0 MB into 3,000 uint16 ids, vocabulary 942" in prepared.stderr
    again = invoke_ok("prepare", small_corpus)
    assert again.stdout.strip() == path and "already prepared: 3,000 tokens" in again.stderr
    assert _train(small_corpus).exit_code == 0
    assert len(os.listdir(workdir / "data" / ".cache")) == 2  # the training run reused the entry
    assert_clean_error(invoke("prepare", small_corpus, "--workers", "0"), 2, "--workers must be positive")


def test_interrupted_then_resumed_equals_uninterrupted(charrnn_executable, tmp_path):
    corpus = tmp_path / "poems.txt"
    corpus.write_text(TANG300.read_text(encoding="utf-8")[:2000], encoding="utf-8")
    common = ["--hidden-size", "16", "--batch-size", "4", "--seq-length", "10", "--rng-seed", "5",
              "--sample-every", "0", "--eval-every", "0"]

    def run(*args):  # in this process: the real process is the interrupted one
        result = invoke("train", *args, "-q")
        assert result.exit_code == 0, result.stderr

    # A run that cannot finish by itself, interrupted at whatever step it has reached after its first
    # save: it finishes that step, saves and exits 130.
    process = subprocess.Popen(
        [charrnn_executable, "train", str(corpus), "--steps", "1000000", *common, "--checkpoint-dir", "parts",
         "--checkpoint-every", "20"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_at_default,
    )
    try:
        wait_until((tmp_path / "parts" / "step_00000020.npz").exists, "the checkpoint of step 20", process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, stderr
    interrupted_at = checkpoint.load(str(tmp_path / "parts" / "latest.npz")).progress.step
    assert interrupted_at >= 20
    # Resumed to a limit past that step, it ends with exactly the model of one uninterrupted run.
    steps = str(interrupted_at + 30)
    run("--resume", tmp_path / "parts" / "latest.npz", "--steps", steps)
    run(corpus, "--steps", steps, *common, "--checkpoint-dir", tmp_path / "whole")
    whole = checkpoint.load(str(tmp_path / "whole" / "latest.npz"))
    parts = checkpoint.load(str(tmp_path / "parts" / "latest.npz"))
    assert parts.progress.step == whole.progress.step == int(steps)
    for name in whole.params:
        assert np.array_equal(whole.params[name], parts.params[name]), name
    for name in whole.optimizer_state:
        assert np.array_equal(whole.optimizer_state[name], parts.optimizer_state[name]), name
