"""Reproduction of the paper's results: specs (one YAML per figure or table), the resumable
parallel sweep runner, result analysis with claim verdicts, and `flwbc reproduce`."""
