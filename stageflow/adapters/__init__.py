"""Adapters: implementations of stageflow's ports on real backends.

Each adapter lives in its own subpackage and imports its heavy dependency
(SQLAlchemy, the OpenTelemetry SDK, Ray); install it through the matching extra.
Core stageflow never imports an adapter.
"""
