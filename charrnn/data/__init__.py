"""Corpus text to token ids: reading and decoding files, tokenizers, the token cache, streams."""
