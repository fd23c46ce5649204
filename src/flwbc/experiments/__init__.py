"""Reproduction of the paper's results: specs (one YAML per figure or table), the resumable
parallel sweep runner, result analysis with claim verdicts, and `flwbc reproduce`."""

BACKENDS = ("local", "ray")
"""Where a sweep's runs can run: worker processes on this machine, or tasks on a Ray cluster."""
