"""Runs to numbers: one table of runs, per-configuration statistics, ensembles, the tutorials."""
