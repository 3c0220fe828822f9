"""Real-Odoo tests run only when ODOO_SRC names an Odoo source tree."""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest

if not os.environ.get("ODOO_SRC"):
    pytest.skip("real-Odoo tests: set ODOO_SRC=/path/to/odoo-source (and ODOO_PYTHON=python with its "
                "requirements) to run them", allow_module_level=True)

from cluster import ODOO_SRC, _connect, ensure_database, odoo_series  # noqa: E402
from servers import REDIS_URI, Backend  # noqa: E402


@pytest.fixture(scope="session")
def series() -> tuple[int, int]:
    return odoo_series(ODOO_SRC)


@pytest.fixture(scope="session")
def odoo_db() -> str:
    return ensure_database(ODOO_SRC)


@pytest.fixture
def settings(driver) -> dict[str, str]:
    """dkn_auth settings of one test's cluster: a fresh prefix, the db driver with zero settings."""
    values = {"driver": driver, "prefix": f"o{uuid.uuid4().hex[:8]}:"}
    if driver == "redis":
        values["redis_uri"] = REDIS_URI
    return values


@pytest.fixture
def raw(driver, settings, odoo_db, request):
    """What the cluster wrote to its backend (the db driver writes into Odoo's own database)."""
    if driver == "redis":
        backend = Backend("redis", settings["prefix"], request.getfixturevalue("redis_client"), None)
        yield backend
        backend.clear()
    else:
        with contextlib.closing(_connect(odoo_db)) as conn:
            backend = Backend("db", settings["prefix"], None, conn)
            yield backend
            backend.clear()


@pytest.fixture
def cluster_store(settings, odoo_db, driver):
    """The same store API Odoo uses, on the cluster's backend, for looking at sessions directly."""
    from cluster import db_params

    from dkn_auth.store import open_store
    from dkn_auth.store.config import Config

    params = db_params()
    store = open_store(Config(driver=driver, prefix=settings["prefix"], redis_uri=REDIS_URI,
                              db_uri=f"postgresql://odoo@{params['host']}:{params['port']}/{odoo_db}"))
    yield store
    store.close()
