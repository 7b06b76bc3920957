"""Hypothesis profiles for the property suite.

``stageflow`` (the default) explores 100 examples per law with no deadline: virtual time
makes every run deterministic, but the first run of a law pays for imports and warm-up.
``stageflow-ci`` (chosen when the ``CI`` environment variable is set) derandomizes, so that
CI explores the same examples on every run and a red build is reproducible locally, and
keeps no example database. ``stageflow-thorough`` (2000 examples) is for bug hunts.
``HYPOTHESIS_PROFILE`` picks a profile explicitly.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("stageflow", max_examples=100, deadline=None)
settings.register_profile(
    "stageflow-ci", settings.get_profile("stageflow"), derandomize=True, database=None
)
settings.register_profile(
    "stageflow-thorough", settings.get_profile("stageflow"), max_examples=2000
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "stageflow-ci" if os.environ.get("CI") else "stageflow")
)
