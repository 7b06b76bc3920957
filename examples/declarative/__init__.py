"""Pipelines as YAML files, with the handlers they name (docs/declarative.md)."""
