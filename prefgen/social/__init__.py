"""Social graph features of individuals and groups (stage `centrality`)."""
