"""Glue between Odoo's HTTP layer and the storage core.

One module per generation of Odoo's HTTP API:

* ``application.py``: Odoo 16.0-19.0 (``odoo.http.Application.session_store``).
"""

from __future__ import annotations

import logging
import os

import odoo
from odoo.tools import config as odoo_config

from ..store import ConfigError, load_config, open_store

_logger = logging.getLogger(__name__)


def odoo_series() -> tuple[int, int]:
    return tuple(odoo.release.version_info[:2])


def loaded_server_wide() -> bool:
    modules = odoo_config.get("server_wide_modules") or ()
    if isinstance(modules, str):
        modules = modules.split(",")
    return "dkn_auth" in {m.strip() for m in modules}


def odoo_db_uri() -> str | None:
    """A libpq DSN of Odoo's own database, for the db driver without dkn_auth_db_uri."""
    names = odoo_config.get("db_name") or ""
    if isinstance(names, (list, tuple)):
        names = ",".join(names)
    dbname = names.split(",")[0].strip()
    if not dbname:
        return None
    from psycopg2.extensions import make_dsn

    params = {"dbname": dbname}
    for key, option in (("host", "db_host"), ("port", "db_port"), ("user", "db_user"),
                        ("password", "db_password"), ("sslmode", "db_sslmode")):
        value = odoo_config.get(option)
        if value not in (None, False, ""):
            params[key] = str(value)
    return make_dsn(**params)


def install() -> None:
    """Replace Odoo's session store, or say loudly why not."""
    if not loaded_server_wide():
        _logger.info("dkn_auth: not in server_wide_modules; sessions stay where Odoo keeps them. "
                     "Add it: server_wide_modules = base,web,dkn_auth")
        return
    try:
        settings = load_config(odoo_config, os.environ, default_db_uri=odoo_db_uri())
    except ConfigError as exc:
        _logger.critical("%s. dkn_auth is NOT active: this node keeps sessions in local files, "
                         "which other nodes do not see.", exc)
        return
    series = odoo_series()
    if series < (16, 0):
        _logger.critical("dkn_auth: Odoo %s.%s is not supported by this version; "
                         "dkn_auth is NOT active.", *series)
        return
    from . import application

    backend = open_store(settings)
    application.install(backend)
    _logger.info("dkn_auth: Odoo %s.%s sessions stored by the %s driver in %s, prefix %r, expiry %s s",
                 *series, settings.driver, backend.policy.backend, settings.prefix, settings.expiry)
