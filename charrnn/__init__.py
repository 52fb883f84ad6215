"""charrnn: character- and word-level RNN language models, trained from the command line on numpy."""

__version__ = "0.1.0"
