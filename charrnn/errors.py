"""The errors charrnn raises for problems a user can fix.

Every error carries the process exit code the command line should use, so the library decides what
kind of failure it is and ``charrnn.cli`` only renders it: 2 for bad usage or input, 1 for a failure while
running.
"""


class CharRNNError(Exception):
    """Base class: a problem with a message that says what went wrong and how to fix it."""

    exit_code = 2


class ConfigError(CharRNNError):
    """An option value that is out of range or conflicts with another one."""


class CorpusError(CharRNNError):
    """A corpus file that is missing, empty, undecodable or too short to train on."""


class VocabularyError(CharRNNError):
    """Text containing tokens the model's vocabulary does not have."""


class CheckpointError(CharRNNError):
    """A checkpoint that is missing, truncated, corrupt, unsafe or incompatible."""


class CheckpointWriteError(CharRNNError):
    """A checkpoint that could not be written (the previous one is left in place)."""

    exit_code = 1


class TrainingError(CharRNNError):
    """Training that cannot go on, such as a loss that became NaN or infinite."""

    exit_code = 1


class OutputPathError(CharRNNError):
    """A path charrnn was asked to write that is not a regular file (a symbolic link, a device, a named
    pipe, a folder): it is left as it is, never replaced nor written through."""
class DiskSpaceError(CharRNNError):
    """A file that would leave its disk all but full: stopped before it did (the disk is not the input's fault)."""

    exit_code = 1


class CharRNNNote(UserWarning):
    """Something the user should know that stops nothing (numba ignoring a setting, a cache rebuilt).

    Issued with ``warnings.warn``; the command line shows it as one ``note:`` line on stderr.
    """
