"""stepdistill: distil a large language model into a small task-specific student."""

__version__ = "0.1.0"
