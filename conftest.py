"""Set-up shared by the whole test session: the unit tests in tests/ and the notebooks of book/ and labs/ (nbval)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("DGMLAB_PROGRESS", "0")
# Offline machines (CI): the staged data folder beside the clone, as in the Makefile. The notebooks' kernels inherit it.
SHARED = Path(__file__).resolve().parent.parent / "shared" / "data"
if not os.environ.get("DGMLAB_DATA") and (SHARED / "mnist").exists():
    os.environ["DGMLAB_DATA"] = str(SHARED)


def pytest_sessionstart(session):
    # Most notebooks and many tests read MNIST. Find it (or download it) once, before anything runs, so that a machine
    # without the data stops with one line saying how to fix it rather than with hundreds of failures.
    if hasattr(session.config, "workerinput"):   # an xdist worker: the controller has checked already
        return
    from dgmlab.data.mnist import FILES
    from dgmlab.data.paths import DataError, fetch

    try:
        for spec in FILES.values():
            fetch(spec)
    except DataError as err:
        pytest.exit(f"the tests need MNIST: {err}", returncode=4)
