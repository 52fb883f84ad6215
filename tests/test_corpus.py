"""Reading corpus files in UTF-8, GBK/GB18030 and with byte-order marks, and cutting streams."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn.data.corpus import read_corpus
from charrnn.data.streams import split_streams
from charrnn.errors import ConfigError, CorpusError

POEM = "春眠不觉晓，处处闻啼鸟。\n"


@pytest.mark.parametrize(
    "data, encoding",
    [
        (POEM.encode("utf-8"), "utf-8"),
        (b"\xef\xbb\xbf" + POEM.encode("utf-8"), "utf-8-sig"),
        (POEM.encode("gbk"), "gb18030"),
        (POEM.encode("gb18030"), "gb18030"),
        (POEM.encode("utf-16"), "utf-16"),
    ],
)
def test_auto_detects_encoding(tmp_path, data, encoding):
    path = tmp_path / "poem.txt"
    path.write_bytes(data)
    corpus = read_corpus([str(path)])
    assert corpus.text == POEM
    assert corpus.encodings == (encoding,)


def test_named_encoding_and_errors(tmp_path):
    path = tmp_path / "big5.txt"
    path.write_bytes("春眠不覺曉".encode("big5"))
    assert read_corpus([str(path)], "big5").text == "春眠不覺曉"
    with pytest.raises(CorpusError, match="not valid utf-8"):
        read_corpus([str(path)], "utf-8")
    with pytest.raises(ConfigError, match="not a codec"):
        read_corpus([str(path)], "no-such-codec")


def test_files_are_concatenated_in_order_and_line_endings_normalised(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_bytes(b"one\r\ntwo\r")
    second.write_bytes("三\n".encode("gbk"))
    corpus = read_corpus([str(first), str(second)])
    assert corpus.text == "one\ntwo\n三\n"
    assert corpus.encodings == ("utf-8", "gb18030")


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "binary"),
        (lambda p: p.write_bytes(b"ok \xff\x80" * 50), "neither UTF-8 nor GB18030"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_bad_corpus_files(tmp_path, setup, message):
    path = tmp_path / "corpus.txt"
    setup(path)
    with pytest.raises(CorpusError, match=message):
        read_corpus([str(path)])


def test_split_streams_is_a_contiguous_view():
    ids = np.arange(23)
    streams = split_streams(ids, batch_size=4, seq_length=3)
    assert streams.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    assert np.shares_memory(streams, ids)


def test_split_streams_refuses_streams_shorter_than_a_chunk():
    with pytest.raises(CorpusError, match="20 tokens: cut into --batch-size 4 streams that is 5 tokens each"):
        split_streams(np.arange(20), batch_size=4, seq_length=5)
