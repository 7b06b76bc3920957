"""Tests of the stageflow command."""
