"""The command line for deeper and gated models, validation, best checkpoints and ``charrnn eval``."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint
from test_cli import FAST, assert_clean_error, invoke


@pytest.mark.parametrize(
    "options",
    [
        ["--cell", "lstm", "--num-layers", "2", "--dropout", "0.2"],
        ["--cell", "gru", "--optimizer", "adam", "--learning-rate", "0.01"],
        ["--cell", "rnn", "--activation", "relu", "--optimizer", "rmsprop", "--learning-rate", "0.002"],
        ["--cell", "gru", "--embed-size", "8", "--num-layers", "2"],
    ],
)
def test_train_sample_and_resume_exactly_for_other_models(tmp_path, small_corpus, options):
    once = invoke("train", small_corpus, "--steps", "12", *FAST, *options, "--checkpoint-dir", tmp_path / "once")
    assert once.exit_code == 0, once.stderr
    invoke("train", small_corpus, "--steps", "5", *FAST, *options, "--checkpoint-dir", tmp_path / "twice")
    resumed = invoke("train", "--resume", tmp_path / "twice" / "latest.npz", "--steps", "12",
                     "--checkpoint-dir", tmp_path / "twice", "-q")
    assert resumed.exit_code == 0, resumed.stderr
    a = checkpoint.load(str(tmp_path / "once" / "latest.npz"))
    b = checkpoint.load(str(tmp_path / "twice" / "latest.npz"))
    assert a.model_config == b.model_config and a.model_config.cell == options[1]
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name
    sampled = invoke("sample", "-c", tmp_path / "once" / "latest.npz", "--seed", "春", "--length", "10", "-q")
    assert sampled.exit_code == 0 and sampled.stdout.startswith("春") and len(sampled.stdout) == 12


def test_validation_best_checkpoint_and_progress_metadata(tmp_path, small_corpus):
    result = invoke("train", small_corpus, "--steps", "30", *FAST, "--eval-every", "10",
                    "--checkpoint-dir", tmp_path, "--learning-rate", "0.2")
    assert result.exit_code == 0, result.stderr
    latest = checkpoint.load(str(tmp_path / "latest.npz"))
    best = checkpoint.load(str(tmp_path / "best.npz"))
    progress = latest.progress
    assert progress.val_step == 30
    assert progress.best_val_loss_nats == best.progress.val_loss_nats <= progress.val_loss_nats
    assert best.progress.step in (10, 20, 30)
    assert progress.val_bits_per_char == pytest.approx(progress.val_loss_nats / math.log(2))
    assert f"validation {progress.val_loss_nats:.4f} nats/token" in result.stderr


def test_eval_command_scores_text_and_reports_unknown_tokens(tmp_path, small_corpus):
    invoke("train", small_corpus, "--steps", "10", *FAST, "--checkpoint-dir", tmp_path)
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("春风又绿江南岸，明月何时照我还。\n☃☃", encoding="utf-8")
    result = invoke("eval", tmp_path / "latest.npz", held_out)
    assert result.exit_code == 0, result.stderr
    ckpt = checkpoint.load(str(tmp_path / "latest.npz"))
    known = [c for c in held_out.read_text(encoding="utf-8") if c in ckpt.tokenizer.vocab]
    unknown = len(held_out.read_text(encoding="utf-8")) - len(known)
    assert unknown >= 2
    share = unknown / (len(known) + unknown)
    assert result.stdout.startswith(f"{len(known) - 1} tokens scored, {unknown} unknown ({share:.0%}): ")
    assert "bits/char" in result.stdout and "perplexity" in result.stdout
    assert (f"warning: {unknown} of the text's {len(known) + unknown} tokens ({share:.0%}) are outside the model's "
            "vocabulary and left out") in result.stderr
    few = tmp_path / "few.txt"  # 199 characters of the corpus and one unknown: 0.5%, a note and no warning
    few.write_text(small_corpus.read_text(encoding="utf-8")[:199] + "☃", encoding="utf-8")
    mostly_known = invoke("eval", tmp_path / "latest.npz", few)
    assert mostly_known.stdout.startswith("198 tokens scored, 1 unknown (0%): ")
    assert mostly_known.stderr == "note: 1 tokens outside the model's vocabulary were left out\n"


def test_eval_with_nothing_to_score_and_bad_checkpoint(tmp_path, small_corpus):
    invoke("train", small_corpus, "--steps", "3", *FAST, "--checkpoint-dir", tmp_path)
    alien = tmp_path / "alien.txt"
    alien.write_text("☃☃☃ ☂", encoding="utf-8")
    assert_clean_error(invoke("eval", tmp_path / "latest.npz", alien), 2, "none of the text can be scored")
    assert_clean_error(invoke("eval", tmp_path / "nope.npz", alien), 2, "no checkpoint at")


def test_val_file_and_its_conflicts(tmp_path, small_corpus):
    val = tmp_path / "val.txt"
    val.write_text(small_corpus.read_text(encoding="utf-8")[:400], encoding="utf-8")
    result = invoke("train", small_corpus, "--val-file", val, "--steps", "4", *FAST, "--checkpoint-dir", tmp_path / "a")
    assert result.exit_code == 0, result.stderr
    assert "3,000 training tokens, 400 validation tokens" in result.stderr
    ckpt = checkpoint.load(str(tmp_path / "a" / "latest.npz"))
    assert ckpt.train_config.val_fraction == 0.0 and ckpt.corpus.val_paths == (str(val),)
    both = invoke("train", small_corpus, "--val-file", val, "--val-fraction", "0.1", "--steps", "4", *FAST,
                  "--checkpoint-dir", tmp_path / "b")
    assert_clean_error(both, 2, "give --val-fraction or --val-file, not both")


def test_model_option_errors_and_notes(tmp_path, small_corpus):
    assert_clean_error(invoke("train", small_corpus, "--num-layers", "0", *FAST), 2, "--num-layers must be positive")
    assert_clean_error(invoke("train", small_corpus, "--dropout", "1.0", *FAST), 2, "--dropout must be at least 0 and below 1")
    assert_clean_error(invoke("train", small_corpus, "--cell", "lstm", "--activation", "relu", *FAST), 2,
                       "--activation applies to the vanilla rnn cell only")
    assert_clean_error(invoke("train", small_corpus, "--lr-decay", "1.5", *FAST), 2, "--lr-decay must be above 0")
    assert_clean_error(invoke("train", small_corpus, "--val-fraction", "1", *FAST), 2, "--val-fraction must be")
    noted = invoke("train", small_corpus, "--dropout", "0.3", "--steps", "2", *FAST, "--checkpoint-dir", tmp_path)
    assert "note: --dropout acts between stacked layers; with one layer it has no effect" in noted.stderr
    conflict = invoke("train", "--resume", tmp_path / "latest.npz", "--cell", "gru", "--steps", "4")
    assert_clean_error(conflict, 2, "--cell gru conflicts with the checkpoint, which has rnn")
    changed = invoke("train", "--resume", tmp_path / "latest.npz", "--learning-rate", "0.05", "--steps", "4",
                     "--checkpoint-dir", tmp_path)
    assert "note: --learning-rate is now 0.05" in changed.stderr
    assert checkpoint.load(str(tmp_path / "latest.npz")).train_config.learning_rate == 0.05


@pytest.mark.parametrize("fixture_name, greedy_sample", [
    # The same output charrnn 0.1.0 gave for this checkpoint (recorded when the fixture was made).
    ("format1_rnn_h8_step7.npz", "明月月月月光月月月月月月月月月月月月月月月月\n"),
    # The same output the format-2 code gave for this checkpoint (recorded when the fixture was made).
    ("format2_gru2_adam_h8_step7.npz", "明月明明明明明月明月月明月月明月月月明月月月\n"),
])
def test_an_older_format_checkpoint_samples_and_resumes(tmp_path, fixture_name, greedy_sample):
    fixture = os.path.join(os.path.dirname(__file__), "data", fixture_name)
    sampled = invoke("sample", "-c", fixture, "--seed", "明月", "--length", "20", "--greedy", "-q")
    assert sampled.stdout == greedy_sample
    corpus = os.path.join(os.path.dirname(__file__), "data", "format1_corpus.txt")
    resumed = invoke("train", corpus, "--resume", fixture, "--steps", "9", "--checkpoint-dir", tmp_path, "-q")
    assert resumed.exit_code == 0, resumed.stderr
    again = checkpoint.load(str(tmp_path / "latest.npz"))
    assert again.progress.step == 9 and again.model_config.embed_size == 0 and again.format_version == 4


def test_embed_size_none_is_zero_and_the_checkpoint_fixes_it(tmp_path, small_corpus):
    none = invoke("train", small_corpus, "--embed-size", "none", "--steps", "2", *FAST, "--checkpoint-dir", tmp_path)
    assert none.exit_code == 0, none.stderr
    assert checkpoint.load(str(tmp_path / "latest.npz")).model_config.embed_size == 0
    assert_clean_error(invoke("train", small_corpus, "--embed-size", "-3", *FAST), 2,
                       "--embed-size must be zero or positive, got -3")
    assert_clean_error(invoke("train", small_corpus, "--embed-size", "some", *FAST), 2, "'some' is not a valid integer")
    conflict = invoke("train", "--resume", tmp_path / "latest.npz", "--embed-size", "8", "--steps", "4")
    assert_clean_error(conflict, 2, "--embed-size 8 conflicts with the checkpoint, which has 0")


def test_patience_stops_after_that_many_validations_without_a_new_best(tmp_path, small_corpus):
    # 2,850 training tokens for 16 hidden units at a high rate: validation bottoms out within 100 steps
    # (on the numpy backend; the compiled one rounds differently and takes another path).
    options = ["--steps", "600", *FAST, "--eval-every", "10", "--learning-rate", "0.3", "--checkpoint-every", "0",
               "--backend", "numpy", "--lr-reductions", "0"]
    stopped = invoke("train", small_corpus, *options, "--patience", "3", "--checkpoint-dir", tmp_path / "a", "--json")
    assert stopped.exit_code == 0, stopped.stderr
    summary = json.loads(stopped.stdout)
    latest = checkpoint.load(str(tmp_path / "a" / "latest.npz"))
    best = checkpoint.load(str(tmp_path / "a" / "best.npz"))
    assert summary["stopped_early"] is True and summary["best_step"] == best.progress.step
    # Stopped at the third validation after the best, each 10 steps apart, long before step 600.
    assert latest.progress.step == best.progress.step + 30 < 600 and summary["steps"] == latest.progress.step
    assert latest.progress.best_val_step == best.progress.step and latest.progress.validations_since_best == 3
    assert summary["best_val_loss_nats"] == best.progress.val_loss_nats == latest.progress.best_val_loss_nats
    assert (f"stopped early at step {latest.progress.step}: 3 validations in a row brought no new best; the best, "
            f"{best.progress.val_loss_nats:.4f} nats/token at step {best.progress.step}, is in best.npz "
            "(--patience 0 never stops early)\n") in stopped.stderr
    # The same seeded run without patience trains on, through the same validations, to its step limit.
    never = invoke("train", small_corpus, *options, "--patience", "0", "--checkpoint-dir", tmp_path / "b", "--json")
    assert json.loads(never.stdout)["stopped_early"] is False and json.loads(never.stdout)["steps"] == 600
    assert "stopped early" not in never.stderr
    assert checkpoint.load(str(tmp_path / "b" / "best.npz")).progress.val_loss_nats <= best.progress.val_loss_nats


def test_a_resumed_run_counts_on_from_the_checkpoint_and_patience_may_change(tmp_path, small_corpus):
    options = [*FAST, "--eval-every", "10", "--learning-rate", "0.3", "--checkpoint-every", "0", "--backend", "numpy",
               "--lr-reductions", "0"]
    invoke("train", small_corpus, "--steps", "600", *options, "--patience", "3", "--checkpoint-dir", tmp_path, "-q")
    stopped_at = checkpoint.load(str(tmp_path / "latest.npz")).progress.step
    # It has used up its patience: one more validation without a new best ends the resumed run.
    again = invoke("train", "--resume", tmp_path / "latest.npz", "--steps", "600", "--eval-every", "10", "--patience", "3",
                   "--backend", "numpy", "--json", "-q")
    assert json.loads(again.stdout)["stopped_early"] is True
    assert json.loads(again.stdout)["steps"] == stopped_at + 10
    noted = invoke("train", "--resume", tmp_path / "latest.npz", "--steps", "600", "--eval-every", "10", "--patience", "4")
    assert ("note: the model has had 4 validations in a row without a new best, as many as --patience 4 allows: it "
            "stops at its next validation unless that is a new best (--patience 0 never stops early)\n") in noted.stderr
    longer = invoke("train", "--resume", tmp_path / "latest.npz", "--steps", str(stopped_at + 50), "--eval-every", "10",
                    "--patience", "0", "--json", "-q")
    assert json.loads(longer.stdout)["stopped_early"] is False and json.loads(longer.stdout)["steps"] == stopped_at + 50
    assert_clean_error(invoke("train", small_corpus, "--patience", "-1", *FAST), 2, "--patience must be zero or positive")
