"""Paths charrnn writes that are not plain files (issue 19, item 1): a symbolic link (to another model's
checkpoint, to /proc/self/fd/1, to nothing), a named pipe or a device at any path a command writes:
refused with one ``Error:`` line and exit 2, the path left as it was, what it points to untouched, no
temporary file left, no hang. ``export -o LINK --overwrite`` used to rename its file over the link
(and over a device node), exit 0.

The written paths: ``export -o``, ``plot -o``, ``train --log-jsonl``, a checkpoint folder's latest.npz,
best.npz and step files, and the token cache's entries. The lock file has its own tests in test_folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import pytest

from charrnn import files
from test_checkpoint_faults import deadline
from test_cli import FAST, invoke
from test_plot import record, write_log

VICTIM_TEXT = b"another model's checkpoint: must never change\n"


def _device(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # /dev/full's numbers, as in the issue


# What may sit at a written path, each made by a function of (path, victim).
SPECIALS: dict[str, Callable[[Path, Path], None]] = {
    "link to another model": lambda path, victim: os.symlink(victim, path),
    "link to /proc/self/fd/1": lambda path, victim: os.symlink("/proc/self/fd/1", path),
    "dangling link": lambda path, victim: os.symlink(path.parent / "gone.npz", path),
    "named pipe": lambda path, victim: os.mkfifo(path),
    "device": lambda path, victim: _device(path),
}


def can_make_devices() -> bool:
    """mknod needs root (CAP_MKNOD)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


class WrittenPath(NamedTuple):
    """A command and the path it writes; ``prepare(folder)`` makes what the command reads first."""

    name: str
    target: Callable[[Path], Path]  # the written path in a folder
    command: Callable[[Path, Path], list]  # (folder, corpus) -> arguments
    prepare: Optional[Callable[[Path, Path], None]] = None


def _trained(folder: Path, corpus: Path) -> None:
    result = invoke("train", corpus, *FAST, "--steps", "2", "--checkpoint-dir", folder / "model", "--cache-dir",
                    folder / "cache", "-q")
    assert result.exit_code == 0, result.stderr


def _cache_entry(suffix: str) -> Callable[[Path], Path]:
    def entry(folder: Path) -> Path:
        return folder / "cache" / f"{(folder / 'key').read_text()}{suffix}"
    return entry


def _cache_key(folder: Path, corpus: Path) -> None:
    """Tokenize once to learn the entry's name, then empty the cache, so the run writes the entry."""
    result = invoke("prepare", corpus, "--cache-dir", folder / "cache", "-q")
    assert result.exit_code == 0, result.stderr
    names = sorted(os.listdir(folder / "cache"))
    (folder / "key").write_text(names[0].rsplit(".", 1)[0])
    for name in names:
        os.unlink(folder / "cache" / name)


WRITTEN_PATHS = [
    WrittenPath("export -o", lambda f: f / "out.npz",
                lambda f, c: ["export", f / "model", "-o", f / "out.npz", "--overwrite"], _trained),
    WrittenPath("plot -o", lambda f: f / "loss.png",
                lambda f, c: ["plot", f / "train.jsonl", "-o", f / "loss.png"],
                lambda f, c: write_log(f / "train.jsonl", [record(s, 5.0 - 0.1 * s) for s in range(1, 5)]) and None),
    WrittenPath("train --log-jsonl", lambda f: f / "log.jsonl",
                lambda f, c: ["train", c, *FAST, "--steps", "2", "--checkpoint-dir", f / "run", "--log-jsonl",
                              f / "log.jsonl", "--cache-dir", f / "cache"]),
    *[WrittenPath(f"train: {name}", lambda f, name=name: f / "run" / name,
                  lambda f, c: ["train", c, *FAST, "--steps", "2", "--checkpoint-dir", f / "run", "--eval-every", "1",
                                "--cache-dir", f / "cache"],
                  lambda f, c: os.mkdir(f / "run"))
      for name in ("latest.npz", "best.npz", "step_00000002.npz")],
    WrittenPath("train --resume: latest.npz", lambda f: f / "model" / "latest.npz",
                lambda f, c: ["train", "--resume", f / "model" / "step_00000002.npz", "--steps", "3",
                              "--cache-dir", f / "cache"],
                lambda f, c: _trained(f, c) or os.unlink(f / "model" / "latest.npz")),
    WrittenPath("cache entry .json", _cache_entry(".json"),
                lambda f, c: ["train", c, *FAST, "--steps", "2", "--checkpoint-dir", f / "run", "--cache-dir",
                              f / "cache"], _cache_key),
    WrittenPath("cache entry .npy", _cache_entry(".npy"),
                lambda f, c: ["prepare", c, "--cache-dir", f / "cache"], _cache_key),
]


def _state(path: Path) -> tuple:
    """What is at ``path``, as far as a write could change it: its type, inode, and link target."""
    status = os.lstat(path)
    return stat.S_IFMT(status.st_mode), status.st_ino, os.readlink(path) if os.path.islink(path) else None


def _temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


def special_path_outcome(written: WrittenPath, special: str, folder: Path, corpus: Path) -> str:
    """'passed', or what went wrong, when ``special`` sits at ``written``'s path and its command runs."""
    folder.mkdir()
    victim = folder / "victim.npz"
    victim.write_bytes(VICTIM_TEXT)
    if written.prepare is not None:
        written.prepare(folder, corpus)
    path = written.target(folder)
    SPECIALS[special](path, victim)
    before = _state(path)
    from test_checkpoint_faults import invoke_with_deadline, verdict

    run = invoke_with_deadline([*written.command(folder, corpus), "-q"])
    outcome = verdict(run)
    if outcome != "error":
        return f"{outcome} (exit {run.result.exit_code}): {run.result.stderr.strip()[-160:]}"
    if "cannot write" not in run.result.stderr or str(path) not in run.result.stderr:
        return f"unclear message: {run.result.stderr.strip()}"
    if _state(path) != before:
        return "the path was replaced"
    if victim.read_bytes() != VICTIM_TEXT:
        return "the target was written through the link"
    if _temporaries(folder):
        return f"left temporaries {_temporaries(folder)}"
    return "passed"


CASES = [(written, special) for written in WRITTEN_PATHS for special in SPECIALS]


@pytest.mark.parametrize("written, special", [
    (WRITTEN_PATHS[0], "link to another model"), (WRITTEN_PATHS[0], "link to /proc/self/fd/1"),
    (WRITTEN_PATHS[0], "dangling link"), (WRITTEN_PATHS[0], "device"), (WRITTEN_PATHS[1], "link to another model"),
    (WRITTEN_PATHS[2], "named pipe"), (WRITTEN_PATHS[2], "link to another model"),
    (WRITTEN_PATHS[3], "link to another model"), (WRITTEN_PATHS[4], "named pipe"),
    (WRITTEN_PATHS[6], "link to another model"), (WRITTEN_PATHS[7], "link to another model"),
    (WRITTEN_PATHS[8], "named pipe"),
], ids=lambda value: value.name if isinstance(value, WrittenPath) else value)
def test_a_path_that_is_not_a_plain_file_is_never_written(written, special, tmp_path, small_corpus):
    if special == "device" and not can_make_devices():
        pytest.skip("making a device node needs root")
    assert special_path_outcome(written, special, tmp_path / "case", small_corpus) == "passed"


def test_the_export_message(workdir, small_corpus):
    _trained(workdir, small_corpus)
    os.symlink("/proc/self/fd/1", "out.npz")
    result = invoke("export", "model", "-o", "out.npz", "--overwrite")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "Error: cannot write -o out.npz: it is a symbolic link, not a regular file (charrnn never replaces such a "
        "file, nor writes through it); remove it or give another path")


def test_atomic_write_replaces_a_regular_file_and_refuses_anything_else(tmp_path):
    from charrnn.errors import OutputPathError  # here, so that the other tests also run on the code before it

    (tmp_path / "plain").write_bytes(b"old")
    files.atomic_write(str(tmp_path / "plain"), b"new")
    assert (tmp_path / "plain").read_bytes() == b"new"
    (tmp_path / "victim").write_bytes(b"victim")
    os.symlink(tmp_path / "victim", tmp_path / "link")
    os.mkfifo(tmp_path / "pipe")
    for name, kind in (("link", "a symbolic link"), ("pipe", "a named pipe")):
        with pytest.raises(OutputPathError, match=f"it is {kind}"):
            files.atomic_write(str(tmp_path / name), b"new")
    assert os.path.islink(tmp_path / "link") and (tmp_path / "victim").read_bytes() == b"victim"
    assert sorted(os.listdir(tmp_path)) == ["link", "pipe", "plain", "victim"]


def test_a_link_that_appears_after_the_check_is_still_not_followed(tmp_path, monkeypatch):
    from charrnn.errors import OutputPathError
    # The open itself refuses a link (O_NOFOLLOW) and anything not a regular file (fstat), whatever
    # the path was when it was checked.
    (tmp_path / "victim").write_text("victim")
    os.symlink(tmp_path / "victim", tmp_path / "log")
    monkeypatch.setattr(files, "require_regular_or_absent", lambda path, what="": None)
    with pytest.raises(OutputPathError, match="it is a symbolic link"), deadline(30):
        files.open_for_append(str(tmp_path / "log"))
    if can_make_devices():
        _device(tmp_path / "device")
        with pytest.raises(OutputPathError, match="it is a device"):
            files.open_for_append(str(tmp_path / "device"))
    assert (tmp_path / "victim").read_text() == "victim"
    with files.open_for_append(str(tmp_path / "plain")) as f:
        f.write("line\n")
    with files.open_for_append(str(tmp_path / "plain")) as f:
        f.write("another\n")
    assert (tmp_path / "plain").read_text() == "line\nanother\n"
