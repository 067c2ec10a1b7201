"""Scoring answers: the QA metrics (metrics.py), batch evaluation over HTTP or in-process
(evaluate.py) and the score files and pictures (scoring.py). `regrad evaluate` and `regrad score` run them."""
