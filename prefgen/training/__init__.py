"""The one training core every model trains through (`core.fit`), its typed config and its data loaders."""
