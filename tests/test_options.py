"""Each option is defined once, on its config field: the command line and the resume rules come from there."""

from __future__ import annotations

import dataclasses
import json
import os

import click

from click.testing import CliRunner

from charrnn import config, settings
from charrnn.cli import ENVVAR_PREFIX, cli
from charrnn.mpi_environment import SWITCH_VARIABLE
from charrnn.config import DataConfig, ModelConfig, SampleConfig, ScheduleConfig, TrainConfig
from charrnn.settings import CHANGEABLE, FIXED
from charrnn.training import resume
from test_cli import invoke, invoke_ok


def _help(command: str) -> str:
    return "".join(invoke_ok(command, "--help").stdout.split())  # without the wrapping (and every space)


def test_every_option_field_is_an_option_of_its_commands_with_its_default_and_help():
    for command, classes in {"train": (DataConfig, ModelConfig, TrainConfig, ScheduleConfig),
                             "sample": (SampleConfig,)}.items():
        text = _help(command)
        for cls in classes:
            for field, found in settings.options(cls):
                flag = settings.flag(cls, field.name)
                assert flag in text, flag
                assert "".join(found.help.split()) in text, flag
                if found.default_text:
                    assert "".join(f"[default: {found.default_text}]".split()) in text, flag
                elif field.default is not None and not isinstance(field.default, bool):
                    assert f"[default:{field.default}]" in text, flag
    assert "--encodingCODEC" in _help("eval") and "--tokenizer[char|jieba]" in _help("prepare")


def test_the_resume_rules_come_from_the_fields():
    assert set(resume.settings_on_resume(FIXED)) == {
        "embed_size", "hidden_size", "num_layers", "cell", "activation", "dropout", "dtype", "seq_length", "batch_size",
        "optimizer", "rng_seed", "val_fraction", "val_split", "tokenizer", "max_vocab", "bidirectional", "look_ahead",
    }
    assert resume.settings_on_resume(CHANGEABLE) == {
        "learning_rate": (TrainConfig, "--learning-rate"), "lr_decay": (TrainConfig, "--lr-decay"),
        "lr_decay_after": (TrainConfig, "--lr-decay-after"), "clip": (TrainConfig, "--clip"),
        "max_steps": (TrainConfig, "--steps"), "max_epochs": (TrainConfig, "--epochs"),
        "lr_reductions": (TrainConfig, "--lr-reductions"), "anneal": (TrainConfig, "--anneal"),
    }


def test_errors_name_a_setting_by_its_flag():
    for make, message in [
        (lambda: TrainConfig(max_steps=0), "--steps must be positive, got 0"),
        (lambda: TrainConfig(max_epochs=float("nan")), "--epochs must be a finite number, got nan"),
        (lambda: SampleConfig(top_k=0), "--top-k must be positive, got 0"),
        (lambda: ModelConfig(vocab_size=0), "vocab size must be positive, got 0"),
        (lambda: DataConfig(max_vocab=-3), "--max-vocab must be positive, got -3"),
        (lambda: ScheduleConfig(eval_every=-1), "--eval-every must be zero or positive, got -1"),
    ]:
        try:
            make()
        except config.ConfigError as exc:
            assert str(exc) == message
        else:
            raise AssertionError(f"no error for {message}")


def test_environment_variables_are_named_after_the_flags(workdir, small_corpus, monkeypatch):
    monkeypatch.setenv("CHARRNN_TRAIN_STEPS", "2")
    monkeypatch.setenv("CHARRNN_TRAIN_HIDDEN_SIZE", "8")
    monkeypatch.setenv("CHARRNN_TRAIN_BATCH_SIZE", "4")
    result = CliRunner().invoke(cli, ["train", str(small_corpus), "--seq-length", "10", "-q"],
                                auto_envvar_prefix=ENVVAR_PREFIX)
    assert result.exit_code == 0, result.stderr
    info = json.loads(invoke_ok("info", "checkpoints/poems/latest.npz", "--json").stdout)
    assert info["train"]["max_steps"] == 2 and info["model"]["hidden_size"] == 8


def test_a_request_of_defaults_is_a_complete_fresh_run():
    from charrnn.training.session import TrainRequest

    request = TrainRequest(corpus_paths=("a.txt",))
    assert request.train.max_epochs == config.DEFAULT_EPOCHS and request.model.vocab_size is None
    assert dataclasses.replace(request.model, vocab_size=5).hidden_size == 128


def _env_invoke(*args, **env):
    return CliRunner().invoke(cli, [str(a) for a in args], auto_envvar_prefix=ENVVAR_PREFIX, env=env)


def _variables() -> set[str]:
    """Every environment variable charrnn reads: CHARRNN_QUIET, CHARRNN_<COMMAND>_<OPTION>, an option's own
    variable for every command (CHARRNN_BACKEND), and CHARRNN_MPI (mpi_environment.py), no option's."""
    found = {f"{ENVVAR_PREFIX}_{p.name.upper()}" for p in cli.params if isinstance(p, click.Option)}
    found.add(SWITCH_VARIABLE)
    for name, command in cli.commands.items():
        options = [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]
        found |= {f"{ENVVAR_PREFIX}_{name.upper()}_{p.name.upper()}" for p in options}
        found |= {p.envvar for p in options if isinstance(p.envvar, str)}
    return found


def test_every_option_is_named_after_its_long_flag_so_its_variable_is_too():
    for command in [cli, *cli.commands.values()]:
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                assert param.name == max(param.opts, key=len).lstrip("-").replace("-", "_"), param.opts
    assert {"CHARRNN_EVAL_JSON", "CHARRNN_SAMPLE_JSON", "CHARRNN_TRAIN_JSON", "CHARRNN_INFO_JSON",
            "CHARRNN_PREPARE_JSON", "CHARRNN_TRAIN_STEPS", "CHARRNN_QUIET"} <= _variables()


def test_json_flags_and_quiet_from_the_environment(workdir, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "2", "--hidden-size", "8", "--batch-size", "4", "-q")
    scored = _env_invoke("eval", "checkpoints/poems/latest.npz", small_corpus, CHARRNN_EVAL_JSON="1")
    assert scored.exit_code == 0, scored.stderr
    assert json.loads(scored.stdout)["tokens_scored"] == 2999
    quiet = _env_invoke("sample", "--length", "3", CHARRNN_QUIET="1", CHARRNN_SAMPLE_JSON="true")
    assert quiet.exit_code == 0 and quiet.stderr == "" and len(json.loads(quiet.stdout)["samples"]) == 1


def test_a_bad_value_from_the_environment_names_the_variable(workdir, small_corpus):
    typed = _env_invoke("train", small_corpus, CHARRNN_TRAIN_HIDDEN_SIZE="abc")
    assert typed.exit_code == 2 and typed.stdout == ""
    assert typed.stderr.splitlines()[-1] == (
        "Error: Invalid value for CHARRNN_TRAIN_HIDDEN_SIZE (--hidden-size): 'abc' is not a valid integer."
    )
    ranged = _env_invoke("train", small_corpus, CHARRNN_TRAIN_HIDDEN_SIZE="0")
    assert ranged.exit_code == 2
    assert ranged.stderr == "Error: --hidden-size must be positive, got 0 (set by CHARRNN_TRAIN_HIDDEN_SIZE)\n"
    flag = _env_invoke("eval", "x.npz", "y.txt", CHARRNN_EVAL_JSON="maybe")
    assert flag.exit_code == 2 and "Invalid value for CHARRNN_EVAL_JSON (--json): 'maybe'" in flag.stderr
    given = _env_invoke("train", small_corpus, "--hidden-size", "abc")  # from the command line: the flag
    assert given.exit_code == 2
    assert "Error: Invalid value for '--hidden-size': 'abc' is not a valid integer." in given.stderr


def test_a_repeatable_option_splits_its_variable_on_the_path_separator(workdir, small_corpus, tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    text = small_corpus.read_text(encoding="utf-8")
    first.write_text(text[:200], encoding="utf-8")
    second.write_text(text[200:400], encoding="utf-8")
    result = _env_invoke("train", small_corpus, "--steps", "2", "--hidden-size", "8", "--batch-size", "4", "-q",
                         CHARRNN_TRAIN_VAL_FILE=f"{first}{os.pathsep}{second}")
    assert result.exit_code == 0, result.stderr
    info = json.loads(invoke_ok("info", "checkpoints/poems/latest.npz", "--json").stdout)
    assert info["corpus"]["val_paths"] == [str(first), str(second)]
    assert f"paths separated by {os.pathsep!r}" in " ".join(invoke_ok("train", "--help").stdout.split())


def test_each_optimizer_has_its_own_default_rate_scaled_down_above_hidden_256_and_a_given_rate_wins(
    workdir, small_corpus
):
    small, large = ModelConfig(vocab_size=5, hidden_size=64), ModelConfig(vocab_size=5, hidden_size=1024)
    assert TrainConfig(max_steps=1).learning_rate is None  # not settled before the model is known
    assert TrainConfig(max_steps=1).settled(small).learning_rate == 0.02
    assert TrainConfig(max_steps=1).settled(large).learning_rate == 0.005  # 0.02 · 256/1024
    assert TrainConfig(max_steps=1, optimizer="adam").settled(small).learning_rate == 0.002
    assert TrainConfig(max_steps=1, optimizer="rmsprop").settled(large).learning_rate == 0.0005
    assert TrainConfig(max_steps=1, optimizer="rmsprop", learning_rate=0.01).settled(large).learning_rate == 0.01
    result = invoke("train", small_corpus, "--optimizer", "adam", "--steps", "2", "--hidden-size", "512", "-q")
    assert result.exit_code == 0, result.stderr
    # The checkpoint records the rate used, and a resume keeps it.
    assert json.loads(invoke_ok("info", "checkpoints/poems/latest.npz", "--json").stdout)["train"]["learning_rate"] == 0.001
    resumed = invoke("train", "--resume", "checkpoints/poems/latest.npz", "--steps", "3", "-q")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(invoke_ok("info", "checkpoints/poems/latest.npz", "--json").stdout)["train"]["learning_rate"] == 0.001


def test_the_help_states_the_default_rate_rule_and_embedding_size():
    text = " ".join(invoke_ok("train", "--help").stdout.split())
    assert ("[default: 0.02 for adagrad, 0.002 for rmsprop, 0.002 for adam; times 256/H above --hidden-size 256; "
            "a tenth of that for --activation relu]") in text
    assert "[default: H, the hidden size]" in text


def test_the_embedding_size_defaults_to_the_hidden_size_and_none_is_the_one_table_model(workdir, small_corpus):
    assert ModelConfig(vocab_size=5, hidden_size=12).embed_size == 12
    assert ModelConfig(vocab_size=5, hidden_size=12, embed_size=0).embed_size == 0
    result = invoke("train", small_corpus, "--embed-size", "none", "--steps", "1", "--hidden-size", "8", "-q")
    assert result.exit_code == 0, result.stderr
    assert json.loads(invoke_ok("info", "checkpoints/poems/latest.npz", "--json").stdout)["model"]["embed_size"] == 0
