"""The model registry: bundles of every model one retrain made, the champion gate, promote and rollback,
lineage of an image back to the raw logs, and byte-exact regeneration."""
