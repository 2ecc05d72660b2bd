"""Reporting: statistics over the results table, leaderboards, plots, provenance and the console
table. It reads results (:mod:`xaibench.runs.results`) and never imports the engine."""
