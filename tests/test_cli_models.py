"""The command line for deeper and gated models, validation, best checkpoints and ``charrnn eval``."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint
from charrnn.model import network
from test_cli import FAST, assert_clean_error, invoke, invoke_ok


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
    invoke_ok("train", small_corpus, "--steps", "5", *FAST, *options, "--checkpoint-dir", tmp_path / "twice")
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


def test_validation_best_checkpoint_and_progress_metadata(tmp_path, small_corpus, validation_losses):
    validation_losses([3.5, 3.0, 3.25])  # at steps 2, 4 and 6
    result = invoke("train", small_corpus, "--steps", "6", *FAST, "--eval-every", "2", "--checkpoint-dir", tmp_path)
    assert result.exit_code == 0, result.stderr
    latest = checkpoint.load(str(tmp_path / "latest.npz"))
    best = checkpoint.load(str(tmp_path / "best.npz"))
    progress = latest.progress
    assert (progress.val_step, progress.val_loss_nats) == (6, 3.25)
    assert (progress.best_val_step, progress.best_val_loss_nats, progress.validations_since_best) == (4, 3.0, 1)
    assert (best.progress.step, best.progress.val_loss_nats) == (4, 3.0)
    assert progress.val_bits_per_char == pytest.approx(3.25 / math.log(2))
    assert "validation 3.2500 nats/token" in result.stderr


def test_best_npz_is_the_model_of_the_lowest_real_validation_loss(tmp_path, small_corpus):
    # Real scores, whatever this processor's rounding makes of them: best.npz holds the first model
    # with the lowest validation loss of the log, and says so.
    result = invoke("train", small_corpus, "--steps", "30", *FAST, "--eval-every", "10", "--learning-rate", "0.2",
                    "--checkpoint-dir", tmp_path, "--log-jsonl", tmp_path / "log.jsonl", "--log-every", "0", "-q")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    validated = [(r["val_loss_nats"], r["step"]) for r in records if r["val_loss_nats"] is not None]
    assert [step for _, step in validated] == [10, 20, 30]
    lowest_loss, lowest_step = min(validated)  # the earliest of equal losses: a tie is no new best
    best = checkpoint.load(str(tmp_path / "best.npz"))
    assert (best.progress.step, best.progress.val_loss_nats) == (lowest_step, lowest_loss)
    latest = checkpoint.load(str(tmp_path / "latest.npz")).progress
    assert (latest.best_val_step, latest.best_val_loss_nats) == (lowest_step, lowest_loss)
    assert latest.validations_since_best == [step for _, step in validated][::-1].index(lowest_step)


def test_eval_command_scores_text_and_reports_unknown_tokens(tmp_path, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "10", *FAST, "--checkpoint-dir", tmp_path)
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
    invoke_ok("train", small_corpus, "--steps", "3", *FAST, "--checkpoint-dir", tmp_path)
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
    noted = invoke_ok("train", small_corpus, "--dropout", "0.3", "--steps", "2", *FAST, "--checkpoint-dir", tmp_path)
    assert "note: --dropout acts between stacked layers; with one layer it has no effect" in noted.stderr
    conflict = invoke("train", "--resume", tmp_path / "latest.npz", "--cell", "gru", "--steps", "4")
    assert_clean_error(conflict, 2, "--cell gru conflicts with the checkpoint, which has rnn")
    changed = invoke_ok("train", "--resume", tmp_path / "latest.npz", "--learning-rate", "0.05", "--steps", "4",
                        "--checkpoint-dir", tmp_path)
    assert "note: --learning-rate is now 0.05" in changed.stderr
    assert checkpoint.load(str(tmp_path / "latest.npz")).train_config.learning_rate == 0.05


def _greedy_in_float64(path: str, seed: str, length: int) -> tuple[str, float]:
    """The greedy continuation of ``seed`` under the checkpoint's model computed in float64, and the
    smallest lead of the chosen token's logit over the next one along the way."""
    ckpt = checkpoint.load(path)
    config = dataclasses.replace(ckpt.model_config, dtype="float64")
    params = {name: value.astype(np.float64) for name, value in ckpt.params.items()}
    state = network.initial_hidden(config, 1)
    prime = [int(i) for i in ckpt.tokenizer.encode(seed)]
    for token in prime[:-1]:
        _, state = network.step(params, config, np.array([token]), state)
    token, chosen, leads = prime[-1], [], []
    for _ in range(length):
        logits, state = network.step(params, config, np.array([token]), state)
        highest = np.sort(logits[0])
        leads.append(float(highest[-1] - highest[-2]))
        token = int(np.argmax(logits[0]))
        chosen.append(token)
    return seed + ckpt.tokenizer.decode(chosen), min(leads)


@pytest.mark.parametrize("fixture_name, greedy_sample, loss_nats", [
    # The same output charrnn 0.1.0 gave for this checkpoint (recorded when the fixture was made).
    ("format1_rnn_h8_step7.npz", "明月月月月光月月月月月月月月月月月月月月月月\n", 2.918565655),
    # The start of the output the format-2 code gave for this checkpoint (recorded when the fixture was
    # made): after two tokens this barely trained model's highest logits lie within 1e-4 of each other.
    ("format2_gru2_adam_h8_step7.npz", "明月明明\n", 2.984002690),
])
def test_an_older_format_checkpoint_samples_and_resumes(tmp_path, fixture_name, greedy_sample, loss_nats):
    fixture = os.path.join(os.path.dirname(__file__), "data", fixture_name)
    corpus = os.path.join(os.path.dirname(__file__), "data", "format1_corpus.txt")
    length = len(greedy_sample) - len("明月") - 1
    # The sample is the same on every processor and backend: in float64 each chosen token leads the next
    # by more than 1e-4 nats, and float32 rounding moves logits of this model by about 1e-8 (its eval
    # differs by 4e-9 relative between backends and BLAS kernels).
    text, smallest_lead = _greedy_in_float64(fixture, "明月", length)
    assert text == greedy_sample[:-1] and smallest_lead > 1e-4
    sampled = invoke("sample", "-c", fixture, "--seed", "明月", "--length", str(length), "--greedy", "-q")
    assert sampled.exit_code == 0, sampled.stderr
    assert sampled.stdout == greedy_sample
    # The whole model, not only its argmax: its score of the text (recorded with the arrays as loaded today,
    # when the samples above showed them read as they were written, and eval's warm-up of every stream;
    # the two backends agree to 2e-9 relative).
    scored = invoke("eval", fixture, corpus, "--json", "-q")
    assert scored.exit_code == 0, scored.stderr
    assert json.loads(scored.stdout)["loss_nats"] == pytest.approx(loss_nats, rel=1e-6)
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


def test_patience_stops_after_that_many_validations_without_a_new_best(tmp_path, small_corpus, validation_losses):
    # Validated every 2 steps: the best at step 6; then a higher loss, an equal one (no new best either)
    # and a higher one, and the run stops at step 12.
    losses = [4.0, 3.5, 3.0, 3.25, 3.0, 3.5]
    options = [*FAST, "--eval-every", "2", "--checkpoint-every", "0", "--lr-reductions", "0", "--json"]
    chosen = validation_losses(losses, then=2.0)
    stopped = invoke("train", small_corpus, "--steps", "600", *options, "--patience", "3", "--checkpoint-dir",
                     tmp_path / "a")
    assert stopped.exit_code == 0, stopped.stderr
    summary = json.loads(stopped.stdout)
    assert chosen.calls == 6  # no validation after the one that stopped it
    assert (summary["stopped_early"], summary["steps"], summary["best_step"]) == (True, 12, 6)
    assert summary["best_val_loss_nats"] == 3.0 and summary["val_loss_nats"] == 3.5
    latest = checkpoint.load(str(tmp_path / "a" / "latest.npz")).progress
    best = checkpoint.load(str(tmp_path / "a" / "best.npz")).progress
    assert (latest.step, latest.best_val_step, latest.best_val_loss_nats, latest.validations_since_best) == (
        12, 6, 3.0, 3)
    assert (best.step, best.val_loss_nats) == (6, 3.0)
    assert ("stopped early at step 12: 3 validations in a row brought no new best; the best, 3.0000 nats/token at "
            "step 6, is in best.npz (--patience 0 never stops early)\n") in stopped.stderr
    # The same validations without patience: the run trains on to its limit, and finds the new best at 14.
    chosen = validation_losses(losses, then=2.0)
    never = invoke("train", small_corpus, "--steps", "20", *options, "--patience", "0", "--checkpoint-dir",
                   tmp_path / "b")
    assert never.exit_code == 0, never.stderr
    summary = json.loads(never.stdout)
    assert (summary["stopped_early"], summary["steps"], summary["best_step"]) == (False, 20, 14)
    assert chosen.calls == 10 and "stopped early" not in never.stderr
    assert checkpoint.load(str(tmp_path / "b" / "best.npz")).progress.step == 14


def test_a_resumed_run_counts_on_from_the_checkpoint_and_patience_may_change(tmp_path, small_corpus,
                                                                             validation_losses):
    def train(*args):
        result = invoke("train", *args, "--eval-every", "2", "--json")
        assert result.exit_code == 0, result.stderr
        return result, json.loads(result.stdout)

    latest = tmp_path / "latest.npz"
    validation_losses([3.0], then=3.5)  # the best at step 2, none after it
    _, first = train(small_corpus, "--steps", "600", *FAST, "--checkpoint-every", "0", "--lr-reductions", "0",
                     "--patience", "3",
                     "--checkpoint-dir", tmp_path, "-q")
    assert (first["stopped_early"], first["steps"], first["best_step"]) == (True, 8, 2)
    # It has used up its patience: one more validation without a new best ends the resumed run.
    _, again = train("--resume", latest, "--steps", "600", "--patience", "3", "-q")
    assert (again["stopped_early"], again["steps"], again["best_step"]) == (True, 10, 2)
    assert checkpoint.load(str(latest)).progress.validations_since_best == 4
    # A larger patience is noted; a new best at the next validation counts from zero again.
    validation_losses([2.5], then=3.0)
    noted, more = train("--resume", latest, "--steps", "600", "--patience", "4")
    assert ("note: the model has had 4 validations in a row without a new best, as many as --patience 4 allows: it "
            "stops at its next validation unless that is a new best (--patience 0 never stops early)\n") in noted.stderr
    assert (more["stopped_early"], more["steps"], more["best_step"], more["best_val_loss_nats"]) == (True, 20, 12, 2.5)
    # Without patience the resumed run trains to its step limit.
    _, longer = train("--resume", latest, "--steps", "30", "--patience", "0", "-q")
    assert (longer["stopped_early"], longer["steps"], longer["best_step"]) == (False, 30, 12)
    assert checkpoint.load(str(latest)).progress.validations_since_best == 9
    assert_clean_error(invoke("train", small_corpus, "--patience", "-1", *FAST), 2, "--patience must be zero or positive")
