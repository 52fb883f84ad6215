"""A training run: set up (session), looped (loop), validated, sampled and saved on schedule
(schedule), in a locked checkpoint folder (folder)."""
