"""How ``charrnn sample`` writes its samples: as they are generated, never all held in memory.

One sample is decoded and written a block of tokens at a time while it is generated (with
``--stream``, token by token). Several samples are generated side by side, one token of each per
step, but printed one after the other: their ids go to a temporary file, each sample in a region of
its own, and are read back, decoded and written a block at a time once generation ends. So a sample
of 100 million tokens costs a few blocks of memory, not gigabytes of text.

Plain text: the samples, each starting with the seed, separated by a line of its own holding the
separator (SEPARATOR unless ``--separator``), and a final newline. Splitting the output (less its
final newline) on ``"\\n" + separator + "\\n"`` gives back the samples exactly, unless a sample holds
that line itself; ``--json`` is the exact form. ``--separator ''`` separates them by a blank line.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from charrnn import files
from charrnn.cli.common import OutputFileError
from charrnn.cli.exits import write_stdout

if TYPE_CHECKING:  # numpy loads with the command that samples, not with `charrnn --help`
    import numpy as np

# A line no corpus is likely to hold on its own: the "cut here" line of git's patch mails.
SEPARATOR = "-- >8 --"
# Tokens decoded and written at once: large enough that writing costs nothing next to generating,
# small enough that a reader sees text within about a second.
BLOCK_TOKENS = 4096
# What IdSpool buffers before writing, at most (fewer steps at a time for thousands of samples).
SPOOL_BUFFER_BYTES = 4 << 20


class TextOutput:
    """Samples as plain text, separated by a line holding ``separator``."""

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def begin_sample(self, index: int) -> None:
        """Start sample ``index`` (from 0)."""
        if index:
            write_stdout(f"\n{self.separator}\n", nl=False)

    def write(self, text: str) -> None:
        """More text of the current sample."""
        write_stdout(text, nl=False)

    def end_sample(self) -> None:
        """The current sample is complete."""

    def end(self) -> None:
        """All samples are written."""
        write_stdout("")


class JsonOutput:
    """One JSON document: ``head``'s fields, then ``samples``, a list of strings written as they come.

    The text is that of ``emit_json`` with the samples in the document, byte for byte.
    """

    def __init__(self, head: dict[str, Any]) -> None:
        text = files.json_text(files.finite_or_none(head), allow_nan=False, indent=2)
        self.prefix = text[: -len("\n}")] + ',\n  "samples": ['

    def begin_sample(self, index: int) -> None:
        """Start sample ``index`` (from 0): its opening quote."""
        write_stdout((self.prefix + '\n    "') if index == 0 else ',\n    "', nl=False)

    def write(self, text: str) -> None:
        """More text of the current sample, escaped as JSON escapes it (one character at a time)."""
        write_stdout(files.json_text(text)[1:-1], nl=False)

    def end_sample(self) -> None:
        """The closing quote of the current sample."""
        write_stdout('"', nl=False)

    def end(self) -> None:
        """Close the list and the document."""
        write_stdout("\n  ]\n}")


class IdSpool:
    """The ids of ``num_samples`` samples generated side by side, kept in a temporary file by sample.

    ``append`` takes one step's ids (S,); they are buffered (up to BLOCK_TOKENS steps, at most
    SPOOL_BUFFER_BYTES) and then written,
    each sample's to its own region of the file (sample i holds positions i·length ...), so that
    ``sample_blocks(i)`` reads one sample back in order. The file has no name and vanishes when
    closed, or when the process dies.
    """

    def __init__(self, num_samples: int, length: int, dtype: np.dtype) -> None:
        import numpy as np

        self.length, self.dtype = length, np.dtype(dtype)
        steps = max(1, min(BLOCK_TOKENS, SPOOL_BUFFER_BYTES // (num_samples * self.dtype.itemsize)))
        self.buffer = np.empty((steps, num_samples), dtype=self.dtype)
        self.filled = self.written = 0
        self.file = self._guarded(lambda: tempfile.TemporaryFile(prefix="charrnn-sample-"))

    @staticmethod
    def _guarded(action: Callable[[], Any]) -> Any:
        try:
            return action()
        except OSError as exc:
            raise OutputFileError(
                f"cannot keep the samples in a temporary file ({exc.strerror or exc}); point TMPDIR at a folder "
                "with room, or lower --length or --num-samples"
            ) from None

    def append(self, ids: np.ndarray) -> None:
        """One step's ids, one per sample."""
        self.buffer[self.filled] = ids
        self.filled += 1
        if self.filled == len(self.buffer):
            self._flush()

    def _flush(self) -> None:
        itemsize = self.dtype.itemsize
        for index in range(self.buffer.shape[1]):
            data = self.buffer[: self.filled, index].tobytes()  # a column, copied in order
            self._guarded(lambda: (self.file.seek((index * self.length + self.written) * itemsize),
                                   self.file.write(data)))
        self.written += self.filled
        self.filled = 0

    def sample_blocks(self, index: int) -> Iterable[np.ndarray]:
        """The ids of sample ``index``, BLOCK_TOKENS at a time."""
        import numpy as np

        self._flush()
        itemsize = self.dtype.itemsize
        for start in range(0, self.written, BLOCK_TOKENS):
            count = min(BLOCK_TOKENS, self.written - start)
            self.file.seek((index * self.length + start) * itemsize)
            yield np.frombuffer(self.file.read(count * itemsize), dtype=self.dtype)

    def close(self) -> None:
        """Remove the file."""
        self.file.close()


def write_samples(
    seed: str,
    steps: Iterable[np.ndarray],
    num_samples: int,
    length: int,
    decode: Callable[[list[int]], str],
    output: Any,
    id_dtype: np.dtype,
    block_tokens: int = BLOCK_TOKENS,
    on_progress: Optional[Callable[[int, int], None]] = None,
) -> None:
    """Write the samples whose ids ``steps`` yields (``length`` arrays of shape (num_samples,)) to ``output``.

    One sample is written ``block_tokens`` tokens at a time as it is generated (1: token by token);
    several go through an IdSpool. ``on_progress(done, length)`` is called after every step.
    """
    report = on_progress or (lambda done, total: None)
    if num_samples == 1:
        output.begin_sample(0)
        output.write(seed)
        block: list[int] = []
        for done, ids in enumerate(steps, 1):
            block.append(int(ids[0]))
            if len(block) >= block_tokens:
                output.write(decode(block))
                block.clear()
            report(done, length)
        output.write(decode(block))
        output.end_sample()
        output.end()
        return
    spool = IdSpool(num_samples, length, id_dtype)
    try:
        for done, ids in enumerate(steps, 1):
            spool.append(ids)
            report(done, length)
        for index in range(num_samples):
            output.begin_sample(index)
            output.write(seed)
            for ids in spool.sample_blocks(index):
                output.write(decode(ids.tolist()))
            output.end_sample()
        output.end()
    finally:
        spool.close()
