"""The fault suite's command-line part: bad numeric options and codecs, work too large for the machine,
signals outside the training loop, and failures to write stdout, a log or the token cache. Each case
ends in one ``Error:`` line (or, for a closed pipe, silently) with the documented exit code, no
traceback, no RuntimeWarning and no partial file."""

from __future__ import annotations

import warnings

import pytest

from test_cli import FAST, assert_clean_error, invoke


@pytest.fixture(autouse=True)
def no_runtime_warnings():
    """No case may raise a RuntimeWarning (overflow, invalid value), even one pytest would swallow."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]


# --- codecs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["rot13", "base64", "hex", "zlib", "bz2", "uu", "quopri"])
def test_binary_transforms_are_not_text_encodings(workdir, small_corpus, codec):
    for command in (["train", small_corpus, "--steps", "2", *FAST], ["prepare", small_corpus]):
        result = invoke(*command, "--encoding", codec)
        assert_clean_error(result, 2, f"--encoding '{codec}' is a ")
        assert "transform, not a text encoding; pass the codec the file is written in" in result.stderr
    assert not (workdir / "data").exists()


def test_utf16_and_utf32_without_a_byte_order_mark_name_the_codec_to_use(workdir, tmp_path):
    text = "床前明月光，疑是地上霜。\n" * 40
    for codec in ("utf-16", "utf-32"):
        corpus = tmp_path / f"{codec}.txt"
        corpus.write_bytes(text.encode(f"{codec}-le"))  # no byte-order mark
        refused = invoke("train", corpus, "--steps", "2", *FAST, "--encoding", codec, "--checkpoint-dir", codec)
        assert_clean_error(refused, 2, f"{corpus} cannot be read as {codec}: {codec.upper()} stream does not start "
                                       f"with BOM; pass the right --encoding ({codec}-le or {codec}-be without a "
                                       "byte-order mark)")
        named = invoke("train", corpus, "--steps", "2", *FAST, "--encoding", f"{codec}-le", "--checkpoint-dir", codec)
        assert named.exit_code == 0, named.stderr
    undefined = invoke("prepare", tmp_path / "utf-16.txt", "--encoding", "undefined")
    assert_clean_error(undefined, 2, "cannot be read as undefined: undefined encoding; pass the right --encoding")
