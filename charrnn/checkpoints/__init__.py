"""Checkpoint files: the format, its validation before anything is read, and what ``info`` reports."""
