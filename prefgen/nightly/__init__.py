"""Nightly image sets per segment: the campaign spec, its plan of work units, and their idempotent execution."""
