"""charrnn fill: the math of both methods against plain formulas, the command's output and errors, and a
corpus whose blanks only the text after them decides."""

from __future__ import annotations

import json
import string
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.checkpoints import checkpoint
from charrnn.cli import cli
from charrnn.config import ModelConfig
from charrnn.data.tokenizer import Tokenizer
from charrnn.inference import fill
from charrnn.model import bidirectional, network
from conftest import TANG300
from test_cli import invoke

POEM = "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"


# --- the math ------------------------------------------------------------------------------------------


def _tiny(bidi: bool, seed: int = 0, cell: str = "gru"):
    tokenizer = Tokenizer("char", tuple(sorted(set(POEM))))
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=6, cell=cell, dtype="float64", embed_size=4,
                         bidirectional=bidi)
    params = network.init_params(config, np.random.default_rng(seed), init_scale=0.8, embedding_scale=1.0)
    return tokenizer, config, params


def _log_probability(params, config, ids: list[int]) -> float:
    """log p(x_1 … x_n | x_0) of a whole sequence, one plain forward pass."""
    losses, _ = network.token_losses(params, config, np.array(ids[:-1])[:, None], np.array(ids[1:])[:, None],
                                     network.initial_hidden(config, 1))
    return -float(losses.sum())


def test_whole_text_scoring_is_the_probability_of_each_whole_text():
    tokenizer, config, params = _tiny(bidi=False)
    filler = fill.Filler(params, config, tokenizer, window=10, max_candidates=None, top_k=100)
    result = filler.fill("举头望_月，低头")
    newline = tokenizer.encode("\n").tolist()
    left, right = tokenizer.encode("举头望").tolist(), tokenizer.encode("月，低头").tolist()
    candidates = [i for i, t in enumerate(tokenizer.vocab) if t != "\n"]
    log_p = np.array([_log_probability(params, config, newline + left + [c] + right + newline) for c in candidates])
    expected = np.exp(log_p - log_p.max())
    expected /= expected.sum()
    (blank,) = result.blanks
    assert blank.scored == len(candidates) and blank.coverage == pytest.approx(1.0)
    got = {c.token: c.probability for c in blank.candidates}
    assert set(got) == {tokenizer.vocab[c] for c in candidates}
    for c, p in zip(candidates, expected):
        assert got[tokenizer.vocab[c]] == pytest.approx(p, rel=1e-9)
    assert result.filled == "举头望" + blank.token + "月，低头"
    assert blank.token == tokenizer.vocab[candidates[int(np.argmax(expected))]]


def test_a_candidate_limit_scores_the_most_likely_after_the_left_text_and_says_how_much_they_hold():
    tokenizer, config, params = _tiny(bidi=False, seed=1)
    every = fill.Filler(params, config, tokenizer, window=10, max_candidates=None, top_k=100).fill("低头思_乡")
    some = fill.Filler(params, config, tokenizer, window=10, max_candidates=4, top_k=100).fill("低头思_乡")
    logits, _ = network.step(params, config, tokenizer.encode("\n低头思")[:, None], network.initial_hidden(config, 1))
    allowed = [i for i, t in enumerate(tokenizer.vocab) if t != "\n"]
    left = np.exp(logits[0][allowed] - logits[0][allowed].max())
    top4 = np.argsort(-left)[:4]
    (blank,) = some.blanks
    assert blank.scored == 4 and {c.token for c in blank.candidates} == {tokenizer.vocab[allowed[i]] for i in top4}
    assert blank.coverage == pytest.approx(left[top4].sum() / left.sum(), rel=1e-9)
    # Among the four, the same ranking as scoring every token, renormalised.
    full = {c.token: c.probability for c in every.blanks[0].candidates}
    kept = {c.token: full[c.token] for c in blank.candidates}
    for token, probability in kept.items():
        assert dict((c.token, c.probability) for c in blank.candidates)[token] == pytest.approx(
            probability / sum(kept.values()), rel=1e-9)


def test_the_bidirectional_method_is_the_softmax_of_both_stacks():
    tokenizer, config, params = _tiny(bidi=True, cell="lstm")
    result = fill.Filler(params, config, tokenizer, window=10, top_k=100).fill("疑是_上霜")
    left, right = tokenizer.encode("\n疑是"), tokenizer.encode("上霜\n")
    logits = bidirectional.blank_logits(params, config, left[:, None], right[:, None])[0]
    allowed = [i for i, t in enumerate(tokenizer.vocab) if t != "\n"]
    expected = np.exp(logits[allowed] - logits[allowed].max())
    expected /= expected.sum()
    got = {c.token: c.probability for c in result.blanks[0].candidates}
    for i, p in zip(allowed, expected):
        assert got[tokenizer.vocab[i]] == pytest.approx(p, rel=1e-9)


def test_several_blanks_are_filled_most_confident_first_each_with_the_others_in_place():
    tokenizer, config, params = _tiny(bidi=True, seed=3)
    filler = fill.Filler(params, config, tokenizer, window=10, top_k=3)
    result = filler.fill("床_明月_，疑是地_霜")
    assert sorted(b.order for b in result.blanks) == [1, 2, 3]
    first = next(b for b in result.blanks if b.order == 1)
    # The first filled is the most confident of the three scored with the others unfilled: each reads up
    # to its neighbouring blanks only.
    alone = []
    for left, right in (("\n床", "明月"), ("明月", "，疑是地"), ("，疑是地", "霜\n")):
        logits = bidirectional.blank_logits(params, config, tokenizer.encode(left)[:, None],
                                            tokenizer.encode(right)[:, None])[0]
        allowed = [i for i, t in enumerate(tokenizer.vocab) if t != "\n"]
        p = np.exp(logits[allowed] - logits[allowed].max())
        alone.append(p.max() / p.sum())
    assert first.offset == [1, 4, 9][int(np.argmax(alone))]
    assert first.candidates[0].probability == pytest.approx(max(alone), rel=1e-9)
    assert result.filled == "".join(
        piece + (result.blanks[i].token if i < 3 else "") for i, piece in enumerate("床_明月_，疑是地_霜".split("_")))


def test_texts_that_cannot_be_filled_say_why():
    tokenizer, config, params = _tiny(bidi=True)
    filler = fill.Filler(params, config, tokenizer, window=3)
    with pytest.raises(fill.FillError, match="the text has no blank: mark each missing token with _"):
        filler.fill("床前明月光")
    with pytest.raises(fill.FillError, match="4 blanks in a row .from character 1. are more than the model's "
                                             "window of 3 tokens"):
        filler.fill("床____光")
    assert len(filler.fill("床___光").blanks) == 3
    with pytest.raises(Exception, match=r"outside the model's vocabulary \(next to blank 1\): 'x'"):
        filler.fill("床x_光")
    with pytest.raises(Exception, match=r"outside the model's vocabulary: 'x'"):
        filler.fill("x床_光")
    at_edges = filler.fill("_前明月_")
    assert [b.left_tokens for b in at_edges.blanks][0] == 1  # only the newline a line starts after


# --- the command ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(bidirectional checkpoint, left-to-right checkpoint), tiny, trained on the start of the Tang poems."""
    folder = tmp_path_factory.mktemp("fill")
    corpus = folder / "poems.txt"
    corpus.write_text(TANG300.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    paths = []
    for name, extra in (("bidi", ["--bidirectional", "--look-ahead", "3"]), ("forward", [])):
        result = invoke("train", corpus, *extra, "--steps", "20", "--hidden-size", "16", "--batch-size", "4",
                        "--seq-length", "10", "--rng-seed", "2", "--sample-every", "0", "-q", "--checkpoint-dir",
                        folder / name, "--cache-dir", folder / "cache")
        assert result.exit_code == 0, result.stderr
        paths.append(folder / name / "latest.npz")
    return tuple(paths)


@pytest.mark.parametrize("kind", ["bidi", "forward"])
def test_fill_prints_the_filled_text_and_names_the_method(models, kind):
    path = models[0] if kind == "bidi" else models[1]
    result = invoke("fill", "-c", path, "江湖多_波")
    assert result.exit_code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("江湖多") and line.endswith("波") and len(line) == 5 and "_" not in line
    method = "bidirectional" if kind == "bidi" else "whole-text"
    assert f"method: {method}:" in result.stderr
    top = invoke("fill", "-c", path, "江湖多_波", "--top-k", "3", "-q")
    assert top.stderr == ""
    filled, candidates = top.stdout.splitlines()
    assert filled == line and candidates.startswith("  blank 1: " + line[3] + " ")
    probabilities = [float(part.rsplit(" ", 1)[1].split(" ")[0]) for part in
                     candidates.split(": ", 1)[1].split(" [")[0].split(", ")]
    assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    if kind == "forward":  # 256 of a vocabulary of hundreds: it says how many it scored
        assert "tokens scored" in candidates and "of p(·|left)]" in candidates
        every = invoke("fill", "-c", path, "江湖多_波", "--top-k", "3", "-q", "--candidates", "all")
        assert "tokens scored" not in every.stdout


def test_fill_json_standard_input_files_and_empty_lines(models, tmp_path):
    bidi = models[0]
    texts = tmp_path / "texts.txt"
    texts.write_text("春眠不觉_\n\n处处闻风_，_来风雨声\n", encoding="utf-8")
    from_file = invoke("fill", "-c", bidi, "--file", texts, "--json", "--top-k", "2")
    assert from_file.exit_code == 0, from_file.stderr
    document = json.loads(from_file.stdout)
    assert document["method"] == "bidirectional" and document["candidates_limit"] is None
    first, empty, third = document["texts"]
    assert empty == {"text": "", "filled": "", "blanks": []}
    assert first["text"] == "春眠不觉_" and first["filled"][:4] == "春眠不觉" and len(first["filled"]) == 5
    assert [b["offset"] for b in third["blanks"]] == [4, 6] and sorted(b["order"] for b in third["blanks"]) == [1, 2]
    for blank in first["blanks"] + third["blanks"]:
        assert len(blank["candidates"]) == 2 and blank["token"] == blank["candidates"][0]["token"]
        assert 0 < blank["candidates"][1]["probability"] <= blank["candidates"][0]["probability"] <= 1
    plain = CliRunner().invoke(cli, ["fill", "-c", str(bidi), "-", "-q"], input=texts.read_text(encoding="utf-8"))
    assert plain.stdout.splitlines() == [first["filled"], "", third["filled"]]
    marked = invoke("fill", "-c", bidi, "春眠不觉[?]", "--blank", "[?]", "-q")
    assert marked.stdout.splitlines() == [first["filled"]]


def test_fill_errors_are_one_line_and_exit_2_with_nothing_on_stdout(models):
    bidi, forward = models
    cases = [
        (["江湖多风波"], "the text has no blank: mark each missing token with _ (or choose the marker with --blank)"),
        (["江湖多_波", "没有空白"], "text 2: the text has no blank"),
        (["江Q_波"], "tokens outside the model's vocabulary (next to blank 1): 'Q'"),
        (["江" + "_" * 11 + "波"], "11 blanks in a row (from character 1) are more than the model's window of 10"),
    ]
    for path in (bidi, forward):
        for texts, message in cases:
            result = invoke("fill", "-c", path, *texts)
            assert (result.exit_code, result.stdout) == (2, ""), (texts, result.stderr)
            lines = result.stderr.splitlines()
            assert lines[-1].startswith("Error: ") and message in lines[-1], (texts, result.stderr)
    assert invoke("fill", "-c", bidi).exit_code == 2
    refused = invoke("sample", "-c", bidi, "--seed", "江")
    assert refused.exit_code == 2 and "is a bidirectional model" in refused.stderr and "charrnn fill -c" in refused.stderr


def test_info_ls_and_export_name_the_direction(models, tmp_path):
    bidi, forward = models
    facts = json.loads(invoke("info", bidi, "--json").stdout)
    assert facts["direction"] == "bidirectional" and facts["model"]["bidirectional"] is True
    assert facts["train"]["look_ahead"] == 3 and facts["parameters"]["directions"] == 2
    assert "direction: bidirectional" in invoke("info", bidi).stdout
    assert "direction: left to right" in invoke("info", forward).stdout
    listed = json.loads(invoke("ls", bidi.parent, "--json").stdout)
    assert {item["direction"] for item in listed["checkpoints"]} == {"bidirectional"}
    assert "bidirectional (fills blanks)" in invoke("ls", bidi.parent).stdout
    exported = invoke("export", bidi, "-o", tmp_path / "model.npz", "--json")
    assert json.loads(exported.stdout)["direction"] == "bidirectional"
    assert invoke("fill", "-c", tmp_path / "model.npz", "江湖多_波", "-q").stdout == invoke(
        "fill", "-c", bidi, "江湖多_波", "-q").stdout


def test_the_installed_command_fills_from_standard_input(models, charrnn_executable, tmp_path):
    run = subprocess.run([charrnn_executable, "fill", "-c", str(models[0]), "-", "--json"], input="江湖多_波\n",
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["texts"][0]["filled"][:3] == "江湖多"
    bad = subprocess.run([charrnn_executable, "fill", "-c", str(models[1]), "无空白"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert (bad.returncode, bad.stdout) == (2, "") and bad.stderr.splitlines()[-1].startswith("Error: ")


# --- a corpus only the right context decides ------------------------------------------------------------


def _right_context_lines(count: int, rng: np.random.Generator) -> list[str]:
    """A random letter, a digit, then one of 8 words that decides the digit (bench/right_context.py)."""
    words = {}
    while len(words) < 8:
        words.setdefault("".join(rng.choice(list(string.ascii_uppercase), size=3)), str(len(words)))
    table = list(words.items())
    return [rng.choice(list(string.ascii_lowercase)) + digit + word
            for word, digit in (table[int(i)] for i in rng.integers(8, size=count))]


def test_the_blank_that_only_the_right_context_decides(tmp_path):
    rng = np.random.default_rng(21)
    lines = _right_context_lines(1700, rng)
    corpus = tmp_path / "lines.txt"
    corpus.write_text("\n".join(lines[:1500]) + "\n", encoding="utf-8")
    held_out = lines[1500:]
    models = {}
    for name, extra in (("bidi", ["--bidirectional", "--look-ahead", "5"]), ("forward", [])):
        result = invoke("train", corpus, *extra, "--steps", "150", "--hidden-size", "16", "--seq-length", "15",
                        "--batch-size", "16", "--learning-rate", "0.1", "--cell", "gru", "--rng-seed", "21",
                        "--val-fraction", "0", "--sample-every", "0", "--checkpoint-dir", tmp_path / name, "-q",
                        "--backend", "numpy")
        assert result.exit_code == 0, result.stderr
        models[name] = checkpoint.load(str(tmp_path / name / "latest.npz"))
    bidi, forward = models["bidi"], models["forward"]
    both = fill.Filler(bidi.params, bidi.model_config, bidi.tokenizer, 15)
    whole = fill.Filler(forward.params, forward.model_config, forward.tokenizer, 15, max_candidates=None)
    digits = [forward.tokenizer.vocab.index(str(d)) for d in range(8)]
    right = {"bidirectional": 0, "whole-text": 0, "left-only": 0}
    for line in held_out:
        cloze = line[0] + "_" + line[2:]
        right["bidirectional"] += both.fill(cloze).blanks[0].token == line[1]
        right["whole-text"] += whole.fill(cloze).blanks[0].token == line[1]
        left = forward.tokenizer.encode("\n" + line[0])[:, None]
        logits, _ = network.step(forward.params, forward.model_config, left,
                                 network.initial_hidden(forward.model_config, 1))
        right["left-only"] += forward.tokenizer.vocab[digits[int(np.argmax(logits[0][digits]))]] == line[1]
    accuracy = {name: count / len(held_out) for name, count in right.items()}
    # Measured: 100 %, 100 % and 13 % (chance is 12.5 %); the bounds leave a wide margin for any machine.
    assert accuracy["bidirectional"] >= 0.9, accuracy
    assert accuracy["whole-text"] >= 0.9, accuracy
    assert accuracy["left-only"] <= 0.3, accuracy


# --- scoring, resuming and words --------------------------------------------------------------------------


@pytest.mark.parametrize("window,look_ahead", [(50, 0), (3, 0), (3, 2), (4, 1)])
def test_a_bidirectional_score_reads_each_window_as_training_does(window, look_ahead):
    from charrnn.inference import scoring

    tokenizer, config, params = _tiny(bidi=True, seed=4, cell="rnn")
    ids = tokenizer.encode(POEM[:13])
    score = scoring.score_ids(params, config, ids, tokenizer.token_lengths(), batch_size=1, window=window,
                              look_ahead=look_ahead)
    count = len(ids) - 1
    expected = 0.0
    for t in range(1, count + 1):  # target x_t: everything before it, and to its window's end plus the look-ahead
        window_end = ((t - 1) // window + 1) * window  # the last target of its window
        right_end = min(window_end + look_ahead, count)
        logits = bidirectional.blank_logits(params, config, ids[:t, None], ids[t + 1 : right_end + 1, None])[0]
        expected -= logits[ids[t]] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    assert score.tokens_scored == count
    assert score.total_nats == pytest.approx(expected, rel=1e-10)


def test_a_bidirectional_run_resumes_exactly(tmp_path, small_corpus):
    common = ["--bidirectional", "--look-ahead", "2", "--cell", "lstm", "--hidden-size", "8", "--batch-size", "2",
              "--seq-length", "5", "--rng-seed", "5", "--sample-every", "0", "--eval-every", "2", "-q",
              "--dropout", "0.2", "--num-layers", "2", "--optimizer", "adam", "--learning-rate", "0.01"]
    straight = invoke("train", small_corpus, *common, "--steps", "6", "--checkpoint-dir", tmp_path / "straight")
    assert straight.exit_code == 0, straight.stderr
    first = invoke("train", small_corpus, *common, "--steps", "3", "--checkpoint-dir", tmp_path / "halves")
    assert first.exit_code == 0, first.stderr
    again = invoke("train", "--resume", tmp_path / "halves", "--steps", "6", "-q")
    assert again.exit_code == 0, again.stderr
    one, two = (checkpoint.load(str(tmp_path / name / "latest.npz")) for name in ("straight", "halves"))
    assert two.progress.step == 6 and two.model_config.bidirectional and two.train_config.look_ahead == 2
    for group in ("params", "optimizer_state", "hidden"):
        for name, value in getattr(one, group).items():
            np.testing.assert_array_equal(getattr(two, group)[name], value, err_msg=name)
    conflict = invoke("train", "--resume", tmp_path / "halves", "--steps", "8", "--look-ahead", "1")
    assert conflict.exit_code == 2 and "--look-ahead 1 conflicts with the checkpoint" in conflict.stderr
    forward = invoke("train", small_corpus, "--look-ahead", "2", "--steps", "1", "--checkpoint-dir", tmp_path / "f")
    assert forward.exit_code == 2 and "--look-ahead is how far a --bidirectional model" in forward.stderr


def test_eval_scores_a_bidirectional_model_on_both_sides(models, tmp_path):
    text = tmp_path / "held.txt"
    text.write_text(TANG300.read_text(encoding="utf-8")[:400], encoding="utf-8")
    result = invoke("eval", models[0], text, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["tokens_scored"] > 300


def test_a_word_model_fills_one_word_per_blank(tmp_path):
    corpus = tmp_path / "words.txt"
    corpus.write_text("我的手机坏了，我打算买一部新手机。\n我打算买一本新书。\n他的电脑坏了，他打算修一修。\n" * 30,
                      encoding="utf-8")
    result = invoke("train", corpus, "--tokenizer", "jieba", "--bidirectional", "--steps", "60", "--hidden-size", "16",
                    "--batch-size", "4", "--seq-length", "8", "--learning-rate", "0.1", "--rng-seed", "1",
                    "--sample-every", "0", "-q", "--checkpoint-dir", tmp_path / "words", "--cache-dir", tmp_path / "c")
    assert result.exit_code == 0, result.stderr
    filled = invoke("fill", "-c", tmp_path / "words", "我的手机坏了，我打算_一部新手机。", "--json", "-q")
    assert filled.exit_code == 0, filled.stderr
    (blank,) = json.loads(filled.stdout)["texts"][0]["blanks"]
    ckpt = checkpoint.load(str(tmp_path / "words" / "latest.npz"))
    assert ckpt.tokenizer.kind == "jieba" and all(c["token"] in ckpt.tokenizer.vocab for c in blank["candidates"])
    assert any(len(c["token"]) > 1 for c in blank["candidates"])  # words, not only characters
