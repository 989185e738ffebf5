"""Ranking metrics: what trainers use to choose epochs and evaluation uses to judge (eval/ judges against ground truth)."""
