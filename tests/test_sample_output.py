"""How sample writes its samples: a separator line between them, JSON as the exact form, and text written
as it is generated, never all held in memory."""

from __future__ import annotations

import json
import select
import subprocess
import time
import tracemalloc

import numpy as np
import pytest

from charrnn import files
from charrnn.cli import sample_output
from charrnn.cli.sample_output import IdSpool, JsonOutput, TextOutput, write_samples
from test_cli import FAST, invoke_ok

VOCAB = ["a", "b", "\n", '"', "\\", "月", "\t"]  # with text JSON must escape


def decode(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def fake_steps(length: int, num_samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(length):
        yield rng.integers(len(VOCAB), size=num_samples)


def expected_samples(length: int, num_samples: int, seed_text: str) -> list[str]:
    ids = np.array(list(fake_steps(length, num_samples)))
    return [seed_text + decode(ids[:, i].tolist()) for i in range(num_samples)]


@pytest.mark.parametrize("num_samples, length, block", [(1, 10, 4), (1, 9000, 4096), (3, 10, 4), (4, 9001, 4096)])
def test_text_and_json_hold_exactly_the_samples(capsys, num_samples, length, block):
    samples = expected_samples(length, num_samples, "月")
    write_samples("月", fake_steps(length, num_samples), num_samples, length, decode, TextOutput("-- >8 --"),
                  np.dtype(np.uint8), block)
    text = capsys.readouterr().out
    assert text == "\n-- >8 --\n".join(samples) + "\n"
    head = {"checkpoint": "c.npz", "seed": "月", "temperature": float("nan")}
    write_samples("月", fake_steps(length, num_samples), num_samples, length, decode, JsonOutput(head),
                  np.dtype(np.uint8), block)
    document = capsys.readouterr().out
    # Byte for byte what one json document of the whole would be (NaN as null, as emit_json writes it).
    whole = {"checkpoint": "c.npz", "seed": "月", "temperature": None, "samples": samples}
    assert document == files.json_text(whole, indent=2) + "\n"


def test_the_spool_gives_back_every_sample_in_order(monkeypatch):
    monkeypatch.setattr(sample_output, "SPOOL_BUFFER_BYTES", 3 * 2)  # 3 steps of 2 samples of uint8 at a time
    spool = IdSpool(2, 7, np.dtype(np.uint8))
    steps = np.arange(14, dtype=np.uint8).reshape(7, 2)
    for ids in steps:
        spool.append(ids)
    assert len(spool.buffer) == 3
    assert [np.concatenate(list(spool.sample_blocks(i))).tolist() for i in (0, 1)] == steps.T.tolist()
    spool.close()


def test_one_sample_is_written_as_it_is_generated_and_several_are_never_held(capsys):
    seen = []

    def watched_steps():
        for position, ids in enumerate(fake_steps(3 * 4096, 1)):
            if position == 2 * 4096:
                seen.append(len(capsys.readouterr().out))  # what had been written two blocks in
            yield ids

    write_samples("", watched_steps(), 1, 3 * 4096, decode, TextOutput(""), np.dtype(np.uint8))
    assert seen[0] >= 4096  # written before generation ended
    assert len(capsys.readouterr().out) == 3 * 4096 - seen[0] + 1
    # 30,000 steps of 3 samples: a list of the step arrays alone would take over 4 MB.
    tracemalloc.start()
    write_samples("", fake_steps(30_000, 3), 3, 30_000, decode, TextOutput("=="), np.dtype(np.uint8))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(capsys.readouterr().out) == 3 * 30_000 + 2 * len("\n==\n") + 1
    assert peak < 2_000_000, peak


def test_sample_separator_option_and_the_json_form_agree(workdir, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "3", *FAST, "-q")
    args = ["sample", "--seed", "月", "--length", "40", "--num-samples", "3", "--rng-seed", "8", "-q"]
    samples = json.loads(invoke_ok(*args, "--json").stdout)["samples"]
    assert len(samples) == 3 and all(s.startswith("月") and len(s) == 41 for s in samples)
    assert invoke_ok(*args).stdout == "\n-- >8 --\n".join(samples) + "\n"
    assert invoke_ok(*args, "--separator", "").stdout == "\n\n".join(samples) + "\n"  # the blank line of before
    assert invoke_ok(*args, "--separator", "=== next ===").stdout == "\n=== next ===\n".join(samples) + "\n"
    assert "[default: -- >8 --]" in invoke_ok("sample", "--help").stdout


def test_a_long_sample_reaches_the_reader_while_it_is_generated(charrnn_executable, workdir, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "2", *FAST, "-q")
    process = subprocess.Popen([charrnn_executable, "sample", "--length", "100000000", "-q"], cwd=workdir,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # generous: only a failure waits that long
        received = b""
        while len(received) < 100 and time.monotonic() < deadline:
            if select.select([process.stdout], [], [], 0.1)[0]:
                received += process.stdout.read1(4096)
        assert len(received) >= 100 and process.poll() is None  # text while 100 M tokens are still to come
    finally:
        process.kill()
        process.wait()
