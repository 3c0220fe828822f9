"""Settings: defaults, odoo.conf vs environment, and one clear error per bad value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dkn_auth.store.config import SETTINGS, Config, ConfigError, load_config, redact_uri


def test_defaults_are_the_documented_ones():
    config = load_config({"dkn_auth_driver": "redis"}, {})
    assert config == Config(driver="redis", prefix="session:", expiry=604800,
                            redis_uri="redis://localhost:6379/1", redis_max_conn=64)


def test_odoo_conf_keys_and_environment_variables_both_work():
    from_conf = load_config({"dkn_auth_driver": "redis", "dkn_auth_expiry": "60", "dkn_auth_prefix": "a:"}, {})
    from_env = load_config({}, {"DKN_AUTH_DRIVER": "redis", "DKN_AUTH_EXPIRY": "60", "DKN_AUTH_PREFIX": "a:"})
    assert from_conf == from_env
    assert from_conf.expiry == 60 and from_conf.prefix == "a:"


def test_environment_wins_over_odoo_conf():
    config = load_config({"dkn_auth_driver": "db", "dkn_auth_expiry": "60", "dkn_auth_db_uri": "dbname=a"},
                         {"DKN_AUTH_DRIVER": "redis", "DKN_AUTH_EXPIRY": "90"})
    assert (config.driver, config.expiry) == ("redis", 90)


def test_odoo_absent_values_mean_default():
    # Odoo reports unset odoo.conf keys as None or False.
    config = load_config({"dkn_auth_driver": "redis", "dkn_auth_expiry": False, "dkn_auth_prefix": None}, {})
    assert config.expiry == 604800 and config.prefix == "session:"


def test_db_driver_uses_the_framework_database_by_default():
    config = load_config({"dkn_auth_driver": "db"}, {}, default_db_uri="dbname=odoo host=pg")
    assert config.db_uri == "dbname=odoo host=pg"
    own = load_config({"dkn_auth_driver": "db", "dkn_auth_db_uri": "postgresql://u@h/sessions"}, {},
                      default_db_uri="dbname=odoo")
    assert own.db_uri == "postgresql://u@h/sessions"


BAD = [
    ("dkn_auth_driver", "DKN_AUTH_DRIVER", "memcached", "must be 'db' (PostgreSQL) or 'redis'"),
    ("dkn_auth_expiry", "DKN_AUTH_EXPIRY", "a week", "must be a whole number"),
    ("dkn_auth_expiry", "DKN_AUTH_EXPIRY", "-5", "must be 1 or more"),
    ("dkn_auth_expiry", "DKN_AUTH_EXPIRY", "0", "must be 1 or more"),
    ("dkn_auth_expiry", "DKN_AUTH_EXPIRY", "1.5", "must be a whole number"),
    ("dkn_auth_redis_max_conn", "DKN_AUTH_REDIS_MAX_CONN", "0", "must be 1 or more"),
    ("dkn_auth_redis_uri", "DKN_AUTH_REDIS_URI", "localhost:6379", "must start with redis://"),
    ("dkn_auth_redis_uri", "DKN_AUTH_REDIS_URI", "redis://", "names no host"),
    ("dkn_auth_redis_uri", "DKN_AUTH_REDIS_URI", "redis://h:port/1", "port that is not a number"),
    ("dkn_auth_redis_uri", "DKN_AUTH_REDIS_URI", "redis://h:6379/one", "database number that is not a number"),
    ("dkn_auth_prefix", "DKN_AUTH_PREFIX", "has space", "printable ASCII"),
    ("dkn_auth_prefix", "DKN_AUTH_PREFIX", "{tag}", "without spaces or braces"),
    ("dkn_auth_db_uri", "DKN_AUTH_DB_URI", "postgresql://h:5432", "names no database"),
    ("dkn_auth_db_uri", "DKN_AUTH_DB_URI", "host=h dbname", "is not a libpq URI or DSN"),
    ("dkn_auth_db_max_conn", "DKN_AUTH_DB_MAX_CONN", "many", "must be a whole number"),
    ("dkn_auth_timeout", "DKN_AUTH_TIMEOUT", "soon", "must be a number of seconds"),
    ("dkn_auth_timeout", "DKN_AUTH_TIMEOUT", "0", "more than 0"),
    ("dkn_auth_connect_timeout", "DKN_AUTH_CONNECT_TIMEOUT", "-1", "more than 0"),
    ("dkn_auth_redis_sentinels", "DKN_AUTH_REDIS_SENTINELS", "s1,s2", "host:port pairs"),
    ("dkn_auth_redis_cluster", "DKN_AUTH_REDIS_CLUSTER", "maybe", "must be true or false"),
    ("dkn_auth_redis_tls_ca", "DKN_AUTH_REDIS_TLS_CA", "/no/such/ca.pem", "names no readable file"),
]


@pytest.mark.parametrize("key, var, value, problem", BAD, ids=[f"{b[0]}={b[2]}" for b in BAD])
@pytest.mark.parametrize("source", ["odoo.conf", "env"])
def test_bad_value_names_key_problem_and_fix(key, var, value, problem, source):
    options, environ = {"dkn_auth_driver": "redis"}, {}
    if source == "odoo.conf":
        options[key] = value
    else:
        environ[var] = value
    with pytest.raises(ConfigError) as info:
        load_config(options, environ)
    message = str(info.value)
    assert "\n" not in message
    assert (key if source == "odoo.conf" else var) in message
    assert problem in message
    assert f"fix: set {key}" in message


def test_missing_driver_is_an_error():
    with pytest.raises(ConfigError, match="dkn_auth_driver is not set"):
        load_config({}, {})


def test_db_driver_without_any_database_is_an_error():
    with pytest.raises(ConfigError, match="the db driver has no database.*dkn_auth_db_uri"):
        load_config({"dkn_auth_driver": "db"}, {}, default_db_uri=None)


def test_error_hides_passwords():
    with pytest.raises(ConfigError) as info:
        load_config({"dkn_auth_driver": "redis", "dkn_auth_redis_uri": "redis://u:hunter2@h:x/1"}, {})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("uri, shown", [
    ("redis://:pw@h:6379/1", "redis://:***@h:6379/1"),
    ("rediss://user:p%40ss@h/0", "rediss://user:***@h/0"),
    ("postgresql://odoo:secret@pg/db", "postgresql://odoo:***@pg/db"),
    ("host=pg password=secret dbname=x", "host=pg password=*** dbname=x"),
    ("redis://h:6379/1", "redis://h:6379/1"),
])
def test_redact_uri(uri, shown):
    assert redact_uri(uri) == shown


def test_readme_documents_every_setting_with_its_default():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(dkn_auth_\w+)` \|.*$", readme, re.M)}
    assert set(rows) == {s.conf_key for s in SETTINGS}
    for setting in SETTINGS:
        row = rows[setting.conf_key]
        assert f"`{setting.env_var}`" in row
        default = str(setting.default).lower() if isinstance(setting.default, bool) else setting.default
        shown = "–" if default is None else f"`{default}`"
        assert shown in row, f"README default of {setting.conf_key} must be {shown}"


def test_timeouts_and_redis_options_parse():
    config = load_config({"dkn_auth_driver": "redis", "dkn_auth_timeout": "1.5", "dkn_auth_redis_cluster": "yes",
                          "dkn_auth_redis_sentinel_master": " main "}, {"DKN_AUTH_CONNECT_TIMEOUT": "0.25"})
    assert (config.timeout, config.connect_timeout, config.redis_cluster) == (1.5, 0.25, True)
    assert config.redis_sentinel_master == "main"
    sentinels = load_config({"dkn_auth_driver": "redis", "dkn_auth_redis_sentinels": "s1:26379, [::1]:26380"}, {})
    assert sentinels.redis_sentinels == (("s1", 26379), ("::1", 26380))


@pytest.mark.parametrize("options, problem", [
    ({"dkn_auth_redis_sentinels": "s1:26379", "dkn_auth_redis_cluster": "true"}, "both set"),
    ({"dkn_auth_redis_tls_ca": __file__}, "is not rediss://"),
    ({"dkn_auth_redis_uri": "rediss://h/0", "dkn_auth_redis_tls_cert": __file__}, "go together"),
])
def test_redis_options_that_do_not_fit_together(options, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config({"dkn_auth_driver": "redis", **options}, {})


def test_a_sentinel_password_is_never_shown():
    with pytest.raises(ConfigError) as info:
        load_config({"dkn_auth_driver": "redis", "dkn_auth_redis_sentinel_password": "hunter2",
                     "dkn_auth_redis_cluster": "nope"}, {})
    assert "hunter2" not in str(info.value)
