"""Tokenizers and the sorted vocabulary, with real jieba."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from charrnn.errors import CheckpointError, VocabularyError
from charrnn.data.tokenizer import Tokenizer, tokenize


def test_char_vocabulary_is_sorted_and_ids_round_trip():
    tokenizer, ids = Tokenizer.fit("月落乌啼霜满天\nabc月", "char")
    # Code-point order: 月 is U+6708, 满 U+6EE1.
    assert tokenizer.vocab == ("\n", "a", "b", "c", "乌", "啼", "天", "月", "满", "落", "霜")
    assert ids.dtype == np.int32
    assert ids.tolist() == [7, 9, 4, 5, 10, 8, 6, 0, 1, 2, 3, 7]
    assert tokenizer.decode(ids) == "月落乌啼霜满天\nabc月"
    assert tokenizer.encode("天月").tolist() == [6, 7]


def test_vocabulary_order_does_not_depend_on_hash_randomisation():
    script = "from charrnn.data.tokenizer import Tokenizer; print(Tokenizer.fit('zyx春眠不觉晓abc', 'char')[0].vocab)"
    outputs = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_unknown_characters_are_listed():
    tokenizer, _ = Tokenizer.fit("abc", "char")
    with pytest.raises(VocabularyError, match=r"'x', 'y'"):
        tokenizer.encode("axyx")


def test_unknown_list_is_capped():
    tokenizer, _ = Tokenizer.fit("a", "char")
    with pytest.raises(VocabularyError, match="'k' and 15 more"):
        tokenizer.encode("bcdefghijklmnopqrstuvwxyz"[:26])


def test_jieba_words_round_trip_and_seed_falls_back_to_known_pieces():
    text = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"
    words = tokenize(text, "jieba")
    assert "".join(words) == text
    assert words[:6] == ["床前", "明月光", "，", "疑是", "地上", "霜"]
    tokenizer, ids = Tokenizer.fit(text, "jieba")
    assert tokenizer.vocab == tuple(sorted(set(words)))
    assert tokenizer.decode(ids) == text
    # jieba cuts "霜思" as one word the vocabulary lacks; it is split into the known words 霜 and 思.
    assert tokenize("霜思", "jieba") == ["霜思"]
    assert [tokenizer.vocab[i] for i in tokenizer.encode("霜思故乡")] == ["霜", "思", "故乡"]
    with pytest.raises(VocabularyError, match="'龘'"):
        tokenizer.encode("龘")


def test_to_dict_round_trip_and_malformed_dict():
    tokenizer, _ = Tokenizer.fit("hello", "char")
    assert Tokenizer.from_dict(tokenizer.to_dict()) == tokenizer
    with pytest.raises(CheckpointError, match="malformed"):
        Tokenizer.from_dict({"kind": "char", "vocab": ["b", "a"]})
    with pytest.raises(CheckpointError, match="malformed"):
        Tokenizer.from_dict({"kind": "char"})
