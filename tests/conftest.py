"""Shared fixtures. The real PTB-XL sample lives in ../shared beside the project."""
import os
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptbxl-sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real PTB-XL excerpt; when it is missing the test fails on CI (CI is set) and skips elsewhere."""
    if not (SAMPLE / "ptbxl_database.csv").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"PTB-XL sample not found at {SAMPLE}")
        pytest.skip(f"PTB-XL sample not found at {SAMPLE}")
    return SAMPLE
