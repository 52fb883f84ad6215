"""The token cache: streaming tokenization equals in-memory tokenization, keys follow content."""

from __future__ import annotations

import os

import numpy as np
import pytest

from charrnn import prepare
from charrnn.corpus import TextReader
from charrnn.errors import CorpusError
from charrnn.tokenizer import UNKNOWN_TOKEN, Tokenizer, tokenize
from conftest import TANG300


def test_char_prepare_equals_fitting_the_whole_text(tmp_path):
    prepared = prepare.prepare([str(TANG300)], cache_dir=str(tmp_path))
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
    first = prepare.prepare([str(corpus)], cache_dir=str(tmp_path / "cache"))
    again = prepare.prepare([str(corpus)], cache_dir=str(tmp_path / "cache"))
    assert again.from_cache and again.cache_path == first.cache_path
    assert first.ids.dtype == np.uint8
    corpus.write_text("abcabcabd\n", encoding="utf-8")  # same size, different content
    edited = prepare.prepare([str(corpus)], cache_dir=str(tmp_path / "cache"))
    assert not edited.from_cache and edited.cache_path != first.cache_path
    assert edited.tokenizer.vocab == ("\n", "a", "b", "c", "d")


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    prepared = prepare.prepare([str(TANG300)], cache_dir=str(tmp_path))
    with open(prepared.cache_path, "r+b") as f:
        f.truncate(1000)
    rebuilt = prepare.prepare([str(TANG300)], cache_dir=str(tmp_path))
    assert not rebuilt.from_cache and len(rebuilt.ids) == 29891


def test_files_are_concatenated_with_their_own_encodings(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("春眠不觉晓\n", encoding="utf-8")
    second.write_bytes("处处闻啼鸟\n".encode("gbk"))
    prepared = prepare.prepare([str(first), str(second)], cache_dir=str(tmp_path / "cache"))
    assert prepared.encodings == ("utf-8", "gb18030") and prepared.file_tokens == (6, 6)
    assert prepared.tokenizer.decode(prepared.ids.tolist()) == "春眠不觉晓\n处处闻啼鸟\n"


def test_jieba_in_parallel_equals_one_process(tmp_path, monkeypatch):
    text = TANG300.read_text(encoding="utf-8")[:20000]
    corpus = tmp_path / "poems.txt"
    corpus.write_text(text, encoding="utf-8")
    # Small pieces and no size threshold, so the pool really cuts many pieces of this small file.
    monkeypatch.setattr(prepare, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(prepare, "_JIEBA_PIECE_CHARS", 2000)
    parallel = prepare.prepare([str(corpus)], "jieba", cache_dir=str(tmp_path / "p"), workers=2)
    single = prepare.prepare([str(corpus)], "jieba", cache_dir=str(tmp_path / "s"), workers=1)
    words = tokenize(text, "jieba")
    assert parallel.tokenizer == single.tokenizer == Tokenizer("jieba", tuple(sorted(set(words))))
    assert np.array_equal(parallel.ids, single.ids)
    assert parallel.tokenizer.decode(parallel.ids.tolist()) == text


def test_safe_cut_points_do_not_change_jieba_output():
    text = "明月几时有把酒问青天不知天上宫阙今夕是何年，我欲乘风归去又恐琼楼玉宇高处不胜寒"
    cut = prepare._safe_cut(text)
    assert text[cut - 1] == "，"
    assert tokenize(text[:cut], "jieba") + tokenize(text[cut:], "jieba") == tokenize(text, "jieba")
    assert prepare._safe_cut("一二\n三四") == 3


def test_max_vocab_keeps_the_most_frequent_tokens_and_maps_the_rest_to_unk(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("aaaa bbb cc d\n", encoding="utf-8")  # a:4 b:3 ' ':3 c:2 d:1 \n:1
    prepared = prepare.prepare([str(corpus)], max_vocab=3, cache_dir=str(tmp_path / "cache"))
    tokenizer = prepared.tokenizer
    # Ties (b and space, 3 each) broken in token order: ' ' < 'b'.
    assert tokenizer.vocab == (" ", "<unk>", "a", "b") and tokenizer.unknown == UNKNOWN_TOKEN
    assert tokenizer.decode(prepared.ids.tolist()) == "aaaa bbb <unk><unk> <unk><unk>"
    everything = prepare.prepare([str(corpus)], max_vocab=10, cache_dir=str(tmp_path / "cache"))
    assert everything.tokenizer.unknown is None and everything.tokenizer.vocab_size == 6
    with pytest.raises(CorpusError, match="--max-vocab must be positive"):
        prepare.prepare([str(corpus)], max_vocab=0, cache_dir=str(tmp_path / "cache"))


def test_smallest_id_dtype():
    assert prepare.smallest_id_dtype(256) == np.uint8
    assert prepare.smallest_id_dtype(257) == np.uint16
    assert prepare.smallest_id_dtype(65537) == np.uint32


def test_unwritable_cache_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CorpusError, match="cannot create the cache folder"):
        prepare.prepare([str(TANG300)], cache_dir=str(blocker / "cache"))


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
