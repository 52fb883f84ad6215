"""``charrnn fill``: the missing tokens of a text, from the text on both sides of each blank."""

from __future__ import annotations

from typing import Any, Optional

import click

from charrnn.cli.common import checkpoint_option, emit_json, examples, inform, reports_errors, resolve_checkpoint
from charrnn.cli.exits import write_stdout
from charrnn.cli.options import build, config_options, option, quiet_option
from charrnn.config import ComputeConfig, DataConfig


def _candidates_limit(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[int]:
    """--candidates N, or "all" (None: no limit)."""
    if value is None:
        from charrnn.inference.fill import DEFAULT_CANDIDATES

        return DEFAULT_CANDIDATES
    if value.strip().lower() == "all":
        return None
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a whole number nor 'all'") from None
    if number < 1:
        raise click.BadParameter(f"must be at least 1 (or 'all'), got {number}")
    return number


@click.command("fill", epilog=examples(
    'charrnn fill "床前明_光，疑是地上霜。"',
    'charrnn fill -c fill-model "我的手机坏了，我打算_一部新手机。" --top-k 5',
    'charrnn fill --file cloze.txt --json > answers.json',
    'printf "春眠不觉_\\n处处闻啼_\\n" | charrnn fill -c tang -',
))
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@checkpoint_option()
@option("--file", "file", multiple=True, type=click.Path(allow_dash=True), metavar="PATH",
        help="Read texts from this file, one per line (- for standard input; repeatable).")
@option("--blank", default="_", show_default=True, metavar="S", help="The marker of one missing token.")
@option("--top-k", type=click.IntRange(min=1), metavar="K",
        help="Also print the K most probable candidates of every blank, with their probabilities.")
@option("--candidates", callback=_candidates_limit, metavar="N|all",
        help="With a left-to-right model: score the N tokens most likely after the text before each blank by "
             "the probability of the whole text (all: every token) [default: 256].")
@config_options(DataConfig, only={"encoding"})
@config_options(ComputeConfig)
@option("--json", is_flag=True, help="Print one JSON document: every text filled, and every blank's candidates.")
@quiet_option("No informational messages on stderr (the method, notes).")
@reports_errors
def fill_command(
    texts: tuple[str, ...], checkpoint: Optional[str], file: tuple[str, ...], blank: str, top_k: Optional[int],
    candidates: Optional[int], encoding: str, json: bool, quiet: bool, **options: Any,
) -> None:
    """Fill the blanks of each TEXT: every BLANK marker (_) stands for one missing token (a character, or a
    word for a jieba model). A TEXT of - reads texts from standard input, one per line.

    Prints each text with its blanks filled, one per line (an empty line stays empty). A bidirectional
    model (train --bidirectional) predicts a blank from the text on both sides of it; a left-to-right model
    scores each candidate by the probability of the whole text with it in place (--candidates of them). The
    method is named on stderr and in --json. Several blanks are filled jointly, the most confident first,
    each scored again with the others filled so far in place. Every text is one line, read as the lines of
    the corpus were; no blank is filled with a newline or <unk>.

    Exit code 2 for a text without a blank, a token outside the model's vocabulary (unless it has <unk>),
    or more blanks in a row than the model's window (--seq-length); nothing is printed then.
    """
    from charrnn.checkpoints import checkpoint as checkpoints
    from charrnn.data.corpus import read_text
    from charrnn.errors import CharRNNError
    from charrnn.inference.fill import WHOLE_TEXT, Filler
    from charrnn.model import backend

    kernels = backend.select(build(ComputeConfig, options).backend, sampling=True)
    if texts.count("-") + file.count("-") > 1:
        raise click.UsageError("standard input (-) can be read only once")
    if not texts and not file:
        raise click.UsageError("give a TEXT with a blank (_), --file PATH, or - for standard input")
    lines: list[str] = []
    for text in texts:
        lines += read_text("-", encoding)[0].splitlines() if text == "-" else text.splitlines() or [""]
    for named in file:
        lines += read_text(named, encoding)[0].splitlines()
    path = resolve_checkpoint(checkpoint, quiet)
    ckpt = checkpoints.load(path)
    filler = Filler(ckpt.params, ckpt.model_config, ckpt.tokenizer, ckpt.train_config.seq_length, kernels,
                    max_candidates=candidates, top_k=top_k or 5, blank=blank)
    results = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            results.append(None)
            continue
        try:
            results.append(filler.fill(line))
        except CharRNNError as exc:  # no blank, an unknown token, too many blanks in a row: name the text
            if len(lines) > 1:
                exc.args = (f"text {number}: {exc}",)
            raise
    inform(quiet, f"method: {filler.describe_method()}")
    for result in results:
        if result is not None and result.unknown:
            inform(quiet, f"note: {', '.join(map(repr, dict.fromkeys(result.unknown)))} are outside the model's "
                          f"vocabulary and read as {ckpt.tokenizer.unknown}")
    if json:
        emit_json({
            "checkpoint": path, "method": filler.method, "method_description": filler.describe_method(),
            "backend": kernels.name, "blank": blank,
            "candidates_limit": candidates if filler.method == WHOLE_TEXT else None,
            "texts": [_text_document(line, result, top_k or 5) for line, result in zip(lines, results)],
        })
        return
    output = []
    for line, result in zip(lines, results):
        if result is None:
            output.append(line)
            continue
        output.append(result.filled)
        if top_k:
            possible = filler.possible_tokens
            for number, filled in enumerate(result.blanks, 1):
                shown = ", ".join(f"{c.token!r} {c.probability:.4f}" if c.token.isspace() or not c.token
                                  else f"{c.token} {c.probability:.4f}" for c in filled.candidates)
                scored = ("" if filler.method != WHOLE_TEXT or filled.scored == possible else
                          f" [{filled.scored:,} of {possible:,} tokens scored, {filled.coverage:.1%} of p(·|left)]")
                order = f" (filled {_ordinal(filled.order)})" if len(result.blanks) > 1 else ""
                output.append(f"  blank {number}{order}: {shown}{scored}")
    write_stdout("\n".join(output))


def _ordinal(number: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(number, f"{number}th")


def _text_document(line: str, result: Any, top_k: int) -> dict[str, Any]:
    if result is None:
        return {"text": line, "filled": line, "blanks": []}
    return {
        "text": result.text,
        "filled": result.filled,
        "unknown": list(result.unknown),
        "blanks": [
            {
                "offset": blank.offset, "order": blank.order, "token": blank.token,
                "candidates": [{"token": c.token, "probability": c.probability} for c in blank.candidates[:top_k]],
                "candidates_scored": blank.scored, "left_probability_covered": blank.coverage,
                "context_tokens": {"left": blank.left_tokens, "right": blank.right_tokens},
            }
            for blank in result.blanks
        ],
    }
