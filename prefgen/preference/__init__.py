"""Step 1 of the method: social preference of individuals and groups (graph encoder)."""
