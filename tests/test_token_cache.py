"""The token cache: streaming tokenization equals in-memory tokenization, keys follow content."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from charrnn import files
from charrnn.data import parallel_tokenize, token_cache
from charrnn.data.corpus import TextReader
from charrnn.errors import CorpusError
from charrnn.data.tokenizer import UNKNOWN_TOKEN, Tokenizer, safe_cut, tokenize
from conftest import TANG300


def test_char_prepare_equals_fitting_the_whole_text(tmp_path):
    prepared = token_cache.prepare([str(TANG300)], cache_dir=str(tmp_path))
    tokenizer, ids = Tokenizer.fit(TANG300.read_text(encoding="utf-8"), "char")
    assert prepared.tokenizer == tokenizer and tokenizer.vocab_size == 2580
    assert prepared.ids.dtype == np.uint16 and isinstance(prepared.ids, np.memmap)
    assert np.array_equal(prepared.ids, ids)
    assert prepared.file_tokens == (29891,) and prepared.encodings == ("utf-8",)
    assert not prepared.from_cache
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]  # no temporary files left


def test_second_prepare_is_served_from_the_cache_and_edits_are_not(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcabcabc\n", encoding="utf-8")
    first = token_cache.prepare([str(corpus)], cache_dir=str(tmp_path / "cache"))
    again = token_cache.prepare([str(corpus)], cache_dir=str(tmp_path / "cache"))
    assert again.from_cache and again.cache_path == first.cache_path
    assert first.ids.dtype == np.uint8
    corpus.write_text("abcabcabd\n", encoding="utf-8")  # same size, different content
    edited = token_cache.prepare([str(corpus)], cache_dir=str(tmp_path / "cache"))
    assert not edited.from_cache and edited.cache_path != first.cache_path
    assert edited.tokenizer.vocab == ("\n", "a", "b", "c", "d")


def test_a_cache_entry_is_readable_as_any_new_file_is(tmp_path):
    previous = os.umask(0o022)
    try:
        token_cache.prepare([str(TANG300)], cache_dir=str(tmp_path))
    finally:
        os.umask(previous)
    modes = sorted((p.suffix, p.stat().st_mode & 0o777) for p in tmp_path.iterdir())
    assert modes == [(".json", 0o644), (".npy", 0o644)]  # a shared cache folder serves other users too


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    prepared = token_cache.prepare([str(TANG300)], cache_dir=str(tmp_path))
    with open(prepared.cache_path, "r+b") as f:
        f.truncate(1000)
    rebuilt = token_cache.prepare([str(TANG300)], cache_dir=str(tmp_path))
    assert not rebuilt.from_cache and len(rebuilt.ids) == 29891


def test_files_are_concatenated_with_their_own_encodings(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("春眠不觉晓\n", encoding="utf-8")
    second.write_bytes("处处闻啼鸟\n".encode("gbk"))
    prepared = token_cache.prepare([str(first), str(second)], cache_dir=str(tmp_path / "cache"))
    assert prepared.encodings == ("utf-8", "gb18030") and prepared.file_tokens == (6, 6)
    assert prepared.tokenizer.decode(prepared.ids.tolist()) == "春眠不觉晓\n处处闻啼鸟\n"


def test_jieba_in_parallel_equals_one_process(tmp_path, monkeypatch):
    text = TANG300.read_text(encoding="utf-8")[:20000]
    corpus = tmp_path / "poems.txt"
    corpus.write_text(text, encoding="utf-8")
    # Small pieces and no size threshold, so the pool really cuts many pieces of this small file.
    monkeypatch.setattr(parallel_tokenize, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(parallel_tokenize, "PIECE_CHARS", 2000)
    parallel = token_cache.prepare([str(corpus)], "jieba", cache_dir=str(tmp_path / "p"), workers=2)
    single = token_cache.prepare([str(corpus)], "jieba", cache_dir=str(tmp_path / "s"), workers=1)
    words = tokenize(text, "jieba")
    assert parallel.tokenizer == single.tokenizer == Tokenizer("jieba", tuple(sorted(set(words))))
    assert np.array_equal(parallel.ids, single.ids)
    assert parallel.tokenizer.decode(parallel.ids.tolist()) == text


def test_safe_cut_points_do_not_change_jieba_output():
    text = "明月几时有把酒问青天不知天上宫阙今夕是何年，我欲乘风归去又恐琼楼玉宇高处不胜寒"
    cut = safe_cut(text)
    assert text[cut - 1] == "，"
    assert tokenize(text[:cut], "jieba") + tokenize(text[cut:], "jieba") == tokenize(text, "jieba")
    assert safe_cut("一二\n三四") == 3


def test_max_vocab_keeps_the_most_frequent_tokens_and_maps_the_rest_to_unk(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("aaaa bbb cc d\n", encoding="utf-8")  # a:4 b:3 ' ':3 c:2 d:1 \n:1
    prepared = token_cache.prepare([str(corpus)], max_vocab=3, cache_dir=str(tmp_path / "cache"))
    tokenizer = prepared.tokenizer
    # Ties (b and space, 3 each) broken in token order: ' ' < 'b'.
    assert tokenizer.vocab == (" ", "<unk>", "a", "b") and tokenizer.unknown == UNKNOWN_TOKEN
    assert tokenizer.decode(prepared.ids.tolist()) == "aaaa bbb <unk><unk> <unk><unk>"
    everything = token_cache.prepare([str(corpus)], max_vocab=10, cache_dir=str(tmp_path / "cache"))
    assert everything.tokenizer.unknown is None and everything.tokenizer.vocab_size == 6
    with pytest.raises(CorpusError, match="--max-vocab must be positive"):
        token_cache.prepare([str(corpus)], max_vocab=0, cache_dir=str(tmp_path / "cache"))


def test_smallest_id_dtype():
    assert token_cache.smallest_id_dtype(256) == np.uint8
    assert token_cache.smallest_id_dtype(257) == np.uint16
    assert token_cache.smallest_id_dtype(65537) == np.uint32


def test_unwritable_cache_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CorpusError, match="cannot create the cache folder"):
        token_cache.prepare([str(TANG300)], cache_dir=str(blocker / "cache"))


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64])
def test_reading_in_tiny_chunks_gives_the_same_text(tmp_path, chunk_bytes):
    text = "abc\r\n春眠\r不觉晓\r\n\r\nxyz𝄞\r"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    assert "".join(TextReader(str(path), chunk_bytes=chunk_bytes).chunks()) == "abc\n春眠\n不觉晓\n\nxyz𝄞\n"
    path.write_bytes(("ascii first " * 3).encode() + "然后是中文\n".encode("gbk"))
    reader = TextReader(str(path), chunk_bytes=chunk_bytes)
    assert "".join(reader.chunks()) == "ascii first " * 3 + "然后是中文\n"
    assert reader.encoding == "gb18030"


def test_invalid_utf8_after_valid_utf8_is_refused(tmp_path):
    path = tmp_path / "damaged.txt"
    path.write_bytes("好的文本\n".encode("utf-8") * 1000 + b"\xff\xfe\xfd" + "更多\n".encode("utf-8"))
    with pytest.raises(CorpusError, match=r"not valid UTF-8 at byte 13000, though the text before it is"):
        "".join(TextReader(str(path), chunk_bytes=4096).chunks())


def test_binary_data_without_nul_bytes_is_refused(tmp_path):
    path = tmp_path / "noise.bin"
    rng = np.random.default_rng(0)
    data = bytes(rng.integers(1, 32, size=5000).astype(np.uint8)) + b"tail"
    path.write_bytes(data)
    with pytest.raises(CorpusError, match="looks like a binary file"):
        "".join(TextReader(str(path)).chunks())
    assert os.path.exists(path)


# --- a file that changes while it is prepared (the cache key and the tokens come from the same bytes) ---


def test_a_file_changed_between_hashing_and_reading_is_refused_and_read_again_later(tmp_path, monkeypatch):
    corpus, cache = tmp_path / "c.txt", tmp_path / "cache"
    text = "春眠不觉晓，处处闻啼鸟。\n" * 200
    corpus.write_text(text, encoding="utf-8")

    class TruncatedOnOpen(TextReader):
        def chunks(self, *args, **kwargs):
            corpus.write_text(text[:100], encoding="utf-8")  # after the key was computed, before reading
            return super().chunks(*args, **kwargs)

    monkeypatch.setattr(token_cache, "TextReader", TruncatedOnOpen)
    with pytest.raises(CorpusError, match=r"c\.txt changed while being read; run again"):
        token_cache.prepare([str(corpus)], cache_dir=str(cache))
    assert os.listdir(cache) == []  # no entry, no temporary file
    monkeypatch.undo()
    corpus.write_text(text, encoding="utf-8")  # restored: the same bytes as the key was computed from
    again = token_cache.prepare([str(corpus)], cache_dir=str(cache))
    assert not again.from_cache and len(again.ids) == len(text) == 2600
    assert again.tokenizer.decode(again.ids.tolist()) == text


def test_a_file_rewritten_in_the_middle_of_reading_is_refused(tmp_path, monkeypatch):
    corpus, cache = tmp_path / "c.txt", tmp_path / "cache"
    corpus.write_text("abcdefgh\n" * 5000, encoding="utf-8")  # far more than a read buffer holds

    class SmallChunks(TextReader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.chunk_bytes = 4096

    def rewrite_once(done, total):
        if done == 4096:  # the first chunk has been read and tokenized: the rest is read from the new text
            corpus.write_text("ABCDEFGH\n" * 5000, encoding="utf-8")

    monkeypatch.setattr(token_cache, "TextReader", SmallChunks)
    with pytest.raises(CorpusError, match="changed while being read"):
        token_cache.prepare([str(corpus)], cache_dir=str(cache), on_progress=rewrite_once)
    assert os.listdir(cache) == []
    prepared = token_cache.prepare([str(corpus)], cache_dir=str(cache))
    assert prepared.tokenizer.decode(prepared.ids.tolist()) == "ABCDEFGH\n" * 5000


@pytest.mark.parametrize("chunk_bytes", [1, 3, 64, 1 << 20])
def test_the_reader_hashes_exactly_the_bytes_it_decodes(tmp_path, chunk_bytes):
    # GBK after a little ASCII is first read as UTF-8, then decoded again as GB18030: from memory,
    # so the bytes hashed are the file's, once each, in order.
    data = b"ascii first " * 3 + "然后是中文\r\n".encode("gbk") * 50
    path = tmp_path / "gbk.txt"
    path.write_bytes(data)
    digest = hashlib.sha256()
    reader = TextReader(str(path), chunk_bytes=chunk_bytes)
    assert "".join(reader.chunks(digest=digest)) == "ascii first " * 3 + "然后是中文\n" * 50
    assert reader.encoding == "gb18030"
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


# --- temporary files: removed on every way out, and those of dead processes removed at the next start ---


def _fail_in_tokenizing(monkeypatch, exception):
    def on_progress(done, total):
        raise exception

    return {"on_progress": on_progress}


def _fail_in_writing_ids(monkeypatch, exception):
    def header(*args, **kwargs):
        raise exception

    monkeypatch.setattr(np.lib.format, "write_array_header_1_0", header)
    return {}


def _fail_in_writing_the_json(monkeypatch, exception):
    def fchmod(*args, **kwargs):
        raise exception

    monkeypatch.setattr(os, "fchmod", fchmod)  # only the atomic write of the entry's JSON calls it
    return {}


@pytest.mark.parametrize("where", [_fail_in_tokenizing, _fail_in_writing_ids, _fail_in_writing_the_json])
@pytest.mark.parametrize("exception", [KeyboardInterrupt(), SystemExit(143), CorpusError("boom"), OSError(28, "full")])
def test_no_temporary_file_survives_an_exception(tmp_path, monkeypatch, where, exception):
    cache = tmp_path / "cache"
    options = where(monkeypatch, exception)
    with pytest.raises(type(exception)):
        token_cache.prepare([str(TANG300)], cache_dir=str(cache), **options)
    assert [name for name in os.listdir(cache) if name.endswith(".tmp")] == []


def test_temporaries_of_dead_processes_are_removed_and_those_of_live_ones_kept(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    # Alive until this test closes its standard input, however long the prepare below takes.
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as live:
        try:
            fd, path = files.make_temporary(str(cache), "provisional")
            os.close(fd)
            mine = os.path.basename(path)  # .provisional.<pid>@<host>.<random>.tmp
            host = mine.split("@")[1].split(".")[0]
            names = {
                "mine": mine,
                "live": f".ids.{live.pid}@{host}.abcdefgh.tmp",
                "dead": f".provisional.{dead_pid}@{host}.abcdefgh.tmp",
                # The same process number on another machine that shares the folder: not ours to judge.
                "other host": f".spool.{dead_pid}@{'1' if host[0] == '0' else '0'}{host[1:]}.abcdefgh.tmp",
            }
            others = [".notes.tmp", "keep.tmp", f".x.{dead_pid}.tmp"]  # not charrnn's temporaries
            for name in [*names.values(), *others]:
                (cache / name).write_bytes(b"")
            token_cache.prepare([str(TANG300)], cache_dir=str(cache))
            left = set(os.listdir(cache))
            assert names["dead"] not in left
            assert {names["mine"], names["live"], names["other host"], *others} <= left
        finally:
            live.kill()


def test_standard_input_is_copied_into_the_cache_folder_and_the_copy_removed(tmp_path, monkeypatch):
    text = "床前明月光，疑是地上霜。\n" * 10
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))
    prepared = token_cache.prepare(["-"], cache_dir=str(tmp_path / "cache"))
    assert prepared.paths == ("-",) and prepared.size_bytes == len(text.encode("utf-8"))
    assert prepared.tokenizer.decode(prepared.ids.tolist()) == text
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".json", ".npy"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))
    assert token_cache.prepare(["-"], cache_dir=str(tmp_path / "cache")).from_cache
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(CorpusError, match="^standard input is empty$"):
        token_cache.prepare(["-"], cache_dir=str(tmp_path / "cache2"))
    assert [p.name for p in (tmp_path / "cache2").iterdir()] == []
