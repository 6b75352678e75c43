
import pytest
import torch

# Tests run on the CPU with few threads each (pytest-xdist runs them in parallel).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache directory unless it asks for the shared one."""
    monkeypatch.setenv("CLDIFF_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLDIFF_BENCH_DATA", raising=False)
    yield
