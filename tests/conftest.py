"""Shared pytest fixtures."""
import pytest


@pytest.fixture(scope="session")
def toy_market(tmp_path_factory):
    """Summary dict of the default toy Market-1501 set, generated once per session (~1 s).

    ``toy_market["root"]`` is the folder holding the three split folders.  Treat it as
    read-only: tests that damage files must generate their own copy.
    """
    from reid_baseline.data.toy_market1501 import make_toy_market1501

    return make_toy_market1501(str(tmp_path_factory.mktemp("toy_market")), seed=0)


@pytest.fixture(scope="session")
def toy_market_root(toy_market):
    """Path of the toy set's Market-1501-v15.09.15/ folder (read-only, session-scoped)."""
    return toy_market["root"]
