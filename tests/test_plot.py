"""``charrnn plot`` and charrnn.plot: reading training logs and drawing them to a real PNG."""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from pathlib import Path

import pytest

from charrnn import plot
from charrnn.install import extra_hint
from test_cli import invoke

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def record(step: int, train_loss_nats: float, val_loss_nats=None) -> dict:
    """One line of the schema ``charrnn train --log-jsonl`` writes (80 tokens a step)."""
    return {
        "step": step, "epoch": step / 10, "tokens": 80 * step,
        "train_loss_nats": train_loss_nats, "train_bits_per_char": train_loss_nats / math.log(2),
        "val_loss_nats": val_loss_nats,
        "val_bits_per_char": None if val_loss_nats is None else val_loss_nats / math.log(2),
        "learning_rate": 0.1, "tokens_per_s": 2000.0, "elapsed_s": step * 0.04,
    }


def write_log(path: Path, records: list[dict], extra_lines: dict[int, str] = None) -> Path:
    """Write ``records`` one per line; ``extra_lines`` inserts raw lines before the given index."""
    lines = [json.dumps(r) for r in records]
    for index, line in sorted((extra_lines or {}).items(), reverse=True):
        lines.insert(index, line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG format puts first, right after the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def log(tmp_path) -> Path:
    """Twenty steps, validated every fifth."""
    records = [record(s, 5.0 - 0.1 * s, 5.2 - 0.1 * s if s % 5 == 0 else None) for s in range(1, 21)]
    return write_log(tmp_path / "train.jsonl", records)


def test_plot_writes_a_png_of_the_requested_size(tmp_path, log):
    out = tmp_path / "loss.png"
    result = invoke("plot", log, "-o", out, "--width-px", "640", "--height-px", "480")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == f"wrote {out} (640×480 px; 20 steps, 4 validations)\n"
    assert png_size(out) == (640, 480)
    assert sorted(os.listdir(tmp_path)) == ["loss.png", "train.jsonl"]  # no temporary file left behind


def test_plot_default_size_and_quiet(tmp_path, log):
    out = tmp_path / "loss.png"
    result = invoke("plot", log, "-o", out, "-q")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    assert png_size(out) == (1200, 800)


def test_plot_without_validation_records(tmp_path):
    log = write_log(tmp_path / "train.jsonl", [record(1, 4.0), record(2, 3.5)])
    out = tmp_path / "loss.png"
    assert invoke("plot", log, "-o", out, "--width-px", "301", "--height-px", "199", "-q").exit_code == 0
    assert png_size(out) == (301, 199)


def test_missing_matplotlib_says_how_to_install_it(tmp_path, log, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    out = tmp_path / "loss.png"
    result = invoke("plot", log, "-o", out)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"Error: plotting needs matplotlib: {extra_hint('plot')}\n"
    assert "'charrnn[plot]'" not in result.stderr  # the name on PyPI is another project's
    assert not out.exists()


def test_a_malformed_line_is_named(tmp_path):
    log = write_log(tmp_path / "train.jsonl", [record(1, 4.0), record(2, 3.9)], {1: '{"step": 2, "tok'})
    result = invoke("plot", log, "-o", tmp_path / "loss.png")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"Error: {log}, line 2: not valid JSON (")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "line 1: expected a JSON object, found list"),
        ('{"step": 1, "tokens": 80, "train_loss_nats": 4.0}', "line 1: 'train_bits_per_char' is missing"),
        ('{"step": 1, "tokens": 80, "train_loss_nats": "4", "train_bits_per_char": 5.7}',
         "line 1: 'train_loss_nats' is '4', not a number"),
        ('{"step": 1.5, "tokens": 80, "train_loss_nats": 4.0, "train_bits_per_char": 5.7}',
         "line 1: 'step' and 'tokens' must be whole numbers"),
    ],
)
def test_records_missing_or_mistyped_fields_are_refused(tmp_path, line, message):
    log = tmp_path / "train.jsonl"
    log.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(plot.TrainingLogError, match="^" + str(log).replace(".", r"\.")) as caught:
        plot.read_log(str(log))
    assert message in str(caught.value)


def test_repeated_steps_keep_the_last_record_and_blank_lines_are_skipped(tmp_path):
    # A run to step 4, then a resume from the checkpoint at step 2 that went on to step 5.
    first = [record(s, 5.0 - s) for s in range(1, 5)]
    resumed = [record(s, 10.0 - s, 9.0 if s == 4 else None) for s in range(3, 6)]
    log = write_log(tmp_path / "train.jsonl", first + resumed, {4: "", 2: "   "})
    records = plot.read_log(str(log))
    assert [r.step for r in records] == [1, 2, 3, 4, 5]
    assert [r.train_loss_nats for r in records] == [4.0, 3.0, 7.0, 6.0, 5.0]
    assert [r.val_loss_nats for r in records] == [None, None, None, 9.0, None]
    assert records[3].val_bits_per_char == pytest.approx(9.0 / math.log(2))
    assert records[4].tokens == 400


def test_an_empty_or_missing_log_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    result = invoke("plot", empty, "-o", tmp_path / "loss.png")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"Error: {empty} holds no training records; is training still starting up?\n"
    missing = invoke("plot", tmp_path / "nope.jsonl", "-o", tmp_path / "loss.png")
    assert missing.exit_code == 2 and missing.stderr.startswith(f"Error: no training log at {tmp_path / 'nope.jsonl'}")


def test_bad_sizes_and_unwritable_output(tmp_path, log):
    result = invoke("plot", log, "-o", tmp_path / "loss.png", "--width-px", "0")
    assert result.exit_code == 2 and result.stderr.splitlines()[-1] == "Error: --width-px must be between 1 and 10,000, got 0"
    unwritable = invoke("plot", log, "-o", tmp_path / "no" / "such" / "loss.png")
    assert unwritable.exit_code == 1 and unwritable.stdout == ""
    assert unwritable.stderr.startswith(f"Error: cannot write {tmp_path / 'no' / 'such' / 'loss.png'}: ")


def test_plot_json_names_the_file_it_wrote(tmp_path, log):
    out = tmp_path / "loss.png"
    result = invoke("plot", log, "-o", out, "--width-px", "320", "--height-px", "200", "--json", "-q")
    assert result.exit_code == 0 and result.stderr == ""
    assert json.loads(result.stdout) == {"log": str(log), "output": str(out), "width_px": 320, "height_px": 200,
                                         "steps": 20, "validations": 4}
    assert png_size(out) == (320, 200)


def _two_runs() -> list[dict]:
    """A run to step 12 validated every 4 (best at step 8), then a resume from step 8 to step 16."""
    model = {"model": "rnn, hidden 16, vocabulary 942", "corpus": "poems.txt"}
    first = [{**record(s, 5.0 - 0.1 * s, {4: 4.0, 8: 3.5, 12: 3.7}.get(s)), "run_start_step": 0,
              "run_start_tokens": 0, **model} for s in range(1, 13)]
    second = [{**record(s, 4.0 - 0.1 * s, {12: 3.6, 16: 3.8}.get(s)), "run_start_step": 8, "run_start_tokens": 640,
               **model} for s in range(9, 17)]
    return first + second


def _drawn(figure) -> dict:
    """What each panel shows: its lines by label, and the figure's legend and title."""
    figure.canvas.draw()
    return {
        "title": figure.get_suptitle(),
        "panels": [{line.get_label(): line for line in axes.get_lines()} for axes in figure.axes],
        "legend": [text.get_text() for text in figure.legends[0].get_texts()],
    }


def test_the_plot_marks_the_best_checkpoint_and_each_resume_and_says_what_was_trained(tmp_path):
    log = write_log(tmp_path / "run.jsonl", _two_runs())
    records = plot.read_log(str(log))
    figure = plot.build_figure(records, plot.title_of(records, "run.jsonl"), 800, 500)
    drawn = _drawn(figure)
    assert drawn["title"] == "rnn, hidden 16, vocabulary 942 on poems.txt (run.jsonl)"
    assert drawn["legend"] == ["train (smoothed)", "validation", "best checkpoint (step 8)", "resumed"]
    for panel, best_value in zip(drawn["panels"], (3.5, 3.5 / math.log(2))):
        star = panel["best checkpoint (step 8)"]
        assert list(star.get_xdata()) == [640] and list(star.get_ydata()) == [pytest.approx(best_value)]
        assert list(panel["resumed"].get_xdata()) == [640, 640]  # a vertical line where the resume started
    assert [a.get_text() for a in figure.axes[0].texts] == ["resumed at step 8"]


def test_an_old_log_without_the_new_fields_still_plots(tmp_path, log):
    records = plot.read_log(str(log))
    assert records[0].model is None and records[0].run_start_step is None
    drawn = _drawn(plot.build_figure(records, plot.title_of(records, "train.jsonl"), 600, 400))
    assert drawn["title"] == "train.jsonl"
    assert drawn["legend"] == ["train (smoothed)", "validation", "best checkpoint (step 20)"]
    out = tmp_path / "old.png"
    assert invoke("plot", log, "-o", out, "-q").exit_code == 0 and png_size(out) == (1200, 800)


@pytest.mark.parametrize("size", [(320, 200), (480, 320), (1200, 800)])
def test_the_legend_stays_off_the_curves_at_every_size(tmp_path, size):
    log = write_log(tmp_path / "run.jsonl", _two_runs())
    records = plot.read_log(str(log))
    figure = plot.build_figure(records, plot.title_of(records, "run.jsonl"), *size)
    figure.canvas.draw()
    legend = figure.legends[0].get_window_extent()
    for axes in figure.axes:
        assert not legend.overlaps(axes.get_window_extent()), (size, legend, axes.get_window_extent())


def test_a_training_log_carries_where_its_run_started_and_what_it_trains(workdir, small_corpus):
    args = ["--hidden-size", "16", "--batch-size", "4", "--seq-length", "10", "--sample-every", "0",
            "--log-every", "2", "--log-jsonl", "run.jsonl", "--checkpoint-dir", "run", "-q"]
    assert invoke("train", small_corpus, "--steps", "4", *args).exit_code == 0
    assert invoke("train", "--resume", "run", "--steps", "6", *args).exit_code == 0
    lines = [json.loads(line) for line in (workdir / "run.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["step"], r["run_start_step"], r["run_start_tokens"]) for r in lines] == [
        (2, 0, 0), (4, 0, 0), (6, 4, 160)]
    assert {r["model"] for r in lines} == {f"rnn, hidden 16, vocabulary {lines[0]['model'].rsplit(' ', 1)[1]}"}
    assert {r["corpus"] for r in lines} == {"poems.txt"}
    records = plot.read_log("run.jsonl")
    assert plot.resume_points(records) == [(4, 160)]
    assert plot.title_of(records, "run.jsonl").endswith(" on poems.txt (run.jsonl)")
