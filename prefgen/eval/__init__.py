"""Evaluation code. The only package allowed to read a synthetic world's ground truth
(`truth.py`); tests/test_truth_guard.py checks that no training stage opens it."""
