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
    assert result.exit_code == 2 and result.stderr == "Error: --width-px must be between 1 and 10,000, got 0\n"
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
