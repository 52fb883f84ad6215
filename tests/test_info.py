"""``charrnn info`` and charrnn.checkpoints.info: the facts of real tiny checkpoints, as text and as JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint, info
from charrnn.model import network
from charrnn.config import CELLS, ModelConfig
from test_cli import assert_clean_error, invoke, invoke_ok

FORMAT1 = Path(__file__).resolve().parent / "data" / "format1_rnn_h8_step7.npz"
# The small_corpus fixture: 3,000 characters, 942 of them distinct.
VOCAB = 942
TINY = ["--steps", "5", "--hidden-size", "8", "--batch-size", "2", "--seq-length", "5", "--rng-seed", "1",
        "--sample-every", "0"]


def train_tiny(corpus: Path, directory: Path, *options: str) -> Path:
    result = invoke("train", corpus, *TINY, "--checkpoint-dir", directory, "-q", *options)
    assert result.exit_code == 0, result.stderr
    return directory / "latest.npz"


def info_json(path: Path) -> dict:
    result = invoke("info", path, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("cell", "layers", "expected"),
    [
        # (V + H + 1)·H + (H + 1)·V with V = 942, H = 8; layers above the first read H inputs.
        ("rnn", 1, 951 * 8 + 9 * 942),  # 16,086
        ("rnn", 2, 951 * 8 + 17 * 8 + 9 * 942),  # 16,222
        ("lstm", 1, 4 * 951 * 8 + 9 * 942),  # 38,910
        ("lstm", 2, 4 * 951 * 8 + 4 * 17 * 8 + 9 * 942),  # 39,454
        ("gru", 1, 3 * 951 * 8 + 8 + 9 * 942),  # 31,310
        ("gru", 2, 3 * 951 * 8 + 8 + 3 * 17 * 8 + 8 + 9 * 942),  # 31,726
    ],
)
@pytest.mark.parametrize("embed", [0, 6])
def test_info_json_of_every_cell(tmp_path, small_corpus, cell, layers, expected, embed):
    path = train_tiny(small_corpus, tmp_path / "ck", "--cell", cell, "--num-layers", str(layers),
                      "--embed-size", str(embed))
    facts = info_json(path)
    if embed:  # V·E for the table, and the first layer reads E inputs instead of V: G·(E − V)·H fewer
        expected += VOCAB * embed + {"rnn": 1, "lstm": 4, "gru": 3}[cell] * (embed - VOCAB) * 8
    assert facts["parameters"]["total"] == expected
    assert facts["parameters"]["embedding"] == VOCAB * embed and facts["model"]["embed_size"] == embed
    assert facts["parameters"]["output"] == 9 * VOCAB
    assert len(facts["parameters"]["layers"]) == layers
    assert facts["model"]["cell"] == cell and facts["model"]["num_layers"] == layers
    assert facts["model"]["hidden_size"] == 8 and facts["model"]["vocab_size"] == VOCAB
    assert facts["tokenizer"]["kind"] == "char" and facts["tokenizer"]["vocab_size"] == VOCAB
    assert facts["tokenizer"]["first_tokens"][:4] == ["\n", " ", "%", "、"]
    assert facts["progress"]["step"] == 5 and facts["progress"]["tokens_seen"] == 50  # 5 steps of 2 × 5
    assert facts["train"]["batch_size"] == 2 and facts["train"]["rng_seed"] == 1
    assert facts["format_version"] == checkpoint.FORMAT_VERSION and facts["migrated"] is False
    assert facts["path"] == str(path) and facts["file_size_bytes"] == path.stat().st_size
    assert facts["corpus"]["paths"] == [str(small_corpus)] and facts["corpus"]["num_tokens"] == 3000
    assert facts["validation"]["step"] == 5 and facts["validation"]["loss_nats"] > 0
    assert facts["validation"]["best_step"] == 5 and facts["validation"]["validations_since_best"] == 0


def test_info_text(tmp_path, small_corpus):
    path = train_tiny(small_corpus, tmp_path / "ck")
    result = invoke("info", path)
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"checkpoint: {path} ({path.stat().st_size:,} bytes)"
    assert "cell: embedding 8, rnn (tanh), 1 layer, hidden 8, float32" in lines  # the embedding's default: H
    assert "parameters: 16,150 (= 942·8 + (8 + 8 + 1)·8 + (8 + 1)·942)" in lines
    assert lines[2] == "direction: left to right: predicts the next token (charrnn sample)"
    assert lines[4].startswith("vocabulary: 942 tokens (char), e.g. '\\n', ' ', '%', '、', ")
    assert f"corpus: {small_corpus}, 3,000 tokens" in lines
    assert "encoding: utf-8" in lines
    # 2,857 training tokens (143 held out in blocks) in 2 streams of 1,428: (1,428 − 1) // 5 = 285 steps per epoch.
    assert "trained: step 5, 50 tokens seen, epoch 0.02" in lines
    assert "validation text: 5% of the corpus in blocks of about 38 tokens of whole lines spread across it " \
           "(--val-split spread, seed 0)" in lines
    assert any(line.startswith("train loss (smoothed): ") and line.endswith(" bits/char") for line in lines)
    assert any(line.startswith("validation: ") and line.endswith("at step 5; best " + line.split()[1] + " at step 5")
               for line in lines)
    assert "optimizer: adagrad, clip ±5, batch 2 streams × 5 steps, rng seed 1" in lines
    assert "learning rate: 0.02" in lines
    assert any(line.startswith("saved: ") and "the file's modification time" in line for line in lines)
    assert f"format version: {checkpoint.FORMAT_VERSION}" in lines


def test_info_text_with_an_embedding(tmp_path, small_corpus):
    lines = invoke_ok("info", train_tiny(small_corpus, tmp_path / "ck", "--embed-size", "6", "--cell", "gru")).stdout
    assert "cell: embedding 6, gru, 1 layer, hidden 8, float32\n" in lines
    # 942·6 + 3·(6 + 8 + 1)·8 + 8 + (8 + 1)·942
    assert "parameters: 14,498 (= 942·6 + [3·(6 + 8 + 1)·8 + 8] + (8 + 1)·942)\n" in lines


def test_info_json_epochs_and_iso_time(tmp_path, small_corpus):
    facts = info_json(train_tiny(small_corpus, tmp_path / "ck"))
    assert facts["progress"]["epochs"] == pytest.approx(25 / (285 * 5))
    assert facts["progress"]["epochs_completed"] == 0 and facts["progress"]["position"] == 25
    assert facts["modified"][4] == "-" and "T" in facts["modified"]


def test_info_json_writes_null_for_nan(tmp_path, small_corpus):
    path = train_tiny(small_corpus, tmp_path / "ck")
    ckpt = checkpoint.load(str(path))
    ckpt.progress.loss_ema_steps = 0  # no training loss yet: the smoothed loss is NaN
    checkpoint.atomic_write(str(path), checkpoint.to_bytes(ckpt))
    result = invoke("info", path, "--json")
    assert result.exit_code == 0, result.stderr
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout
    facts = json.loads(result.stdout)
    assert facts["train_loss_nats"] is None and facts["train_bits_per_char"] is None
    assert "train loss (smoothed): none yet" in invoke_ok("info", path).stdout


def test_info_of_the_format1_fixture_says_it_was_migrated():
    facts = info_json(FORMAT1)
    assert facts["format_version"] == 1 and facts["migrated"] is True
    assert facts["parameters"]["total"] == 412  # (20 + 8 + 1)·8 + (8 + 1)·20
    assert facts["progress"]["step"] == 7 and facts["tokenizer"]["vocab_size"] == 20
    text = invoke_ok("info", FORMAT1).stdout
    assert "format version: 1 (migrated to format 4 when loaded)\n" in text
    assert "validation: off (no held-out text)\n" in text


def test_info_defaults_to_the_best_checkpoint(workdir, small_corpus):
    train_tiny(small_corpus, workdir / "checkpoints")
    result = invoke("info")
    assert result.exit_code == 0
    assert result.stderr == "using checkpoints/best.npz\n"
    assert result.stdout.startswith("checkpoint: checkpoints/best.npz (")
    quiet = invoke_ok("info", "-q", "--json")
    assert quiet.stderr == "" and json.loads(quiet.stdout)["progress"]["step"] == 5


def test_info_of_a_folder_uses_its_best_checkpoint(tmp_path, small_corpus):
    train_tiny(small_corpus, tmp_path / "run")
    result = invoke("info", tmp_path / "run", "--json")
    assert result.exit_code == 0
    assert result.stderr == f"using {tmp_path / 'run' / 'best.npz'}\n"
    assert json.loads(result.stdout)["path"] == str(tmp_path / "run" / "best.npz")
    (tmp_path / "empty").mkdir()
    assert_clean_error(invoke("info", tmp_path / "empty"), 2, f"no checkpoint in {tmp_path / 'empty'}", alone=True)


def test_info_errors(workdir):
    assert_clean_error(invoke("info"), 2, "no checkpoint in checkpoints/", alone=True)
    assert_clean_error(invoke("info", "missing.npz", "--json"), 2, "no checkpoint at missing.npz", alone=True)
    (workdir / "junk.npz").write_bytes(b"not a zip at all")
    assert_clean_error(invoke("info", "junk.npz"), 2, "junk.npz is not a charrnn checkpoint", alone=True)


def test_a_formula_that_disagrees_with_the_arrays_is_reported_as_a_bug(monkeypatch):
    monkeypatch.setattr(network, "count_parameters", lambda params: 413)
    assert_clean_error(invoke("info", FORMAT1), 1, "the model has 413 parameters but the formula", alone=True)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_formula_matches_the_model_shapes(cell, layers):
    config = ModelConfig(vocab_size=11, hidden_size=6, num_layers=layers, cell=cell, embed_size=0)
    counted = info.parameter_count(config)
    assert counted.total == sum(int(np.prod(shape)) for shape in network.param_shapes(config).values())
    # The formula as shown must itself evaluate to the total (it is our own text, so eval is safe).
    assert eval(counted.formula.replace("·", "*").replace("[", "(").replace("]", ")")) == counted.total


def test_formula_text_for_stacked_lstm():
    config = ModelConfig(vocab_size=65, hidden_size=8, num_layers=3, cell="lstm", embed_size=0)
    assert info.parameter_count(config).formula == "4·(65 + 8 + 1)·8 + 2·[4·(8 + 8 + 1)·8] + (8 + 1)·65"


def test_info_and_plot_have_help():
    for command in ("info", "plot"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and result.stdout.startswith(f"Usage: cli {command} ")
    assert "--json" in invoke_ok("info", "--help").stdout
    assert "pip install '.[plot]'" in invoke_ok("plot", "--help").stdout
    listing = invoke_ok("--help").stdout
    assert "info" in listing and "plot" in listing


def test_installed_command_prints_one_json_document(charrnn_executable):
    run = subprocess.run([charrnn_executable, "info", str(FORMAT1), "--json"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr == ""
    assert json.loads(run.stdout)["parameters"]["formula"] == "(20 + 8 + 1)·8 + (8 + 1)·20"
