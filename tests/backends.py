"""Which tests run under both Keras backends.

`pytest` runs the unit tests under the first backend, then `test_other_backend.py` runs
them again under the other one. Tests of logic that no backend touches (the pool of
worker processes, the choice among candidate rates, checkpoint bookkeeping, and whole
modules without Keras: data files, records, metrics, plots) are marked `once`: the second
run skips them, which keeps CI under its time budget.
"""
import os

import pytest

once = pytest.mark.skipif(os.environ.get("HELPERS_NESTED_BACKEND_RUN") == "1",
                          reason="backend-independent logic: checked under the first backend only")
