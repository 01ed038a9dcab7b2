"""The test suite. REPO: the checkout's root, for every test that runs or reads something in it."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
