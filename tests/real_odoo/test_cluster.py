"""Two real Odoo nodes, separate data_dirs, one database, one dkn_auth backend."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cluster import ODOO_PYTHON, ODOO_SRC, ROOT, Cluster, addons_path, db_params


@pytest.mark.parametrize("via_env, workers", [(False, 0), (True, 2)], ids=["odoo.conf-threaded", "env-workers2"])
def test_session_is_shared_by_the_cluster(settings, raw, via_env, workers):
    with Cluster(ODOO_SRC, {**settings, "expiry": "5"}, via_env=via_env, workers=workers) as cluster:
        a, b = cluster.nodes
        for node in (a, b):
            assert "dkn_auth: Odoo" in node.log() and f"by the {settings['driver']} driver" in node.log()

        sid = a.login()
        assert a.uid(sid) == 2
        assert b.uid(sid) == 2, "a login on node A must be valid on node B"

        b.logout(sid)
        assert a.uid(sid) is None, "a logout on node B must end the session on node A"
        assert b.uid(sid) is None

        sids = [a.login(), b.login(), a.login()]
        assert all(b.uid(s) == 2 and a.uid(s) == 2 for s in sids)
        dump = raw.dump()
        assert dump, "the backend holds the sessions"
        for s in sids:
            assert s not in dump and s[:42] not in dump, "a backend dump must hold no session id"

        time.sleep(6)  # dkn_auth_expiry = 5, no request meanwhile
        assert all(b.uid(s) is None for s in sids), "sessions must expire 5 s after their last use"

        sid = a.login()
        assert b.uid(sid) == 2
        a.kill()
        assert b.uid(sid) == 2, "killing node A must keep the user logged in on node B"
        assert b.call_kw(sid, "res.users", "read", [[2], ["login"]])[0]["login"] == "admin"


def test_sessions_keep_sliding_while_used(settings, raw):
    with Cluster(ODOO_SRC, {**settings, "expiry": "3"}) as cluster:
        a, b = cluster.nodes
        sid = a.login()
        for node in (b, a, b, a, b):  # used every 1 s for 5 s: longer than the 3 s lifetime
            time.sleep(1)
            assert node.uid(sid) == 2


def test_revoking_a_device_removes_exactly_its_session(settings, raw, series):
    if series < (18, 0):
        pytest.skip("res.device exists from Odoo 18.0 on")
    with Cluster(ODOO_SRC, settings) as cluster:
        a, b = cluster.nodes
        keep, revoke = a.login(), b.login()
        for sid in (keep, revoke):  # a request that records the device
            b.call_kw(sid, "res.users", "read", [[2], ["login"]])
        devices = a.call_kw(keep, "res.device", "search_read",
                            [[["session_identifier", "=", revoke[:42]]], ["id"]])
        assert len(devices) == 1, devices
        action = a.call_kw(keep, "res.device", "revoke", [[devices[0]["id"]]])
        if isinstance(action, dict) and action.get("res_model") == "res.users.identitycheck":
            # Odoo asks for the password first, as the web client would show it.
            wizard = action["res_id"]
            a.call_kw(keep, "res.users.identitycheck", "write", [[wizard], {"password": "admin"}])  # 18.0
            a.call_kw(keep, "res.users.identitycheck", "run_check", [[wizard]],
                      {"context": {"password": "admin"}})  # 19.0 reads it from the context
        assert b.uid(revoke) is None and a.uid(revoke) is None, "the revoked device is logged out"
        assert b.uid(keep) == 2, "the other device stays logged in"


def test_soft_rotation_keeps_the_user_logged_in(settings, raw, series, cluster_store):
    if series < (19, 0):
        pytest.skip("soft session rotation exists from Odoo 19.0 on")
    with Cluster(ODOO_SRC, settings) as cluster:
        a, b = cluster.nodes
        sid = a.login()
        # Age the session past Odoo's 3 h rotation interval.
        stored = cluster_store.load(sid)
        cluster_store.save(sid, {**stored.data, "create_time": stored.data["create_time"] - 4 * 3600}, stored)

        body, rotated = b.rpc("/web/session/get_session_info", {}, sid)
        assert body["result"]["uid"] == 2
        assert rotated and rotated != sid and rotated[:42] == sid[:42], "Odoo 19 soft-rotated the session"
        assert a.uid(rotated) == 2, "the rotated session is valid on the other node"
        assert a.uid(sid) == 2, "the previous sid stays valid during Odoo's grace period"


@pytest.mark.parametrize("via_env", [False, True], ids=["odoo.conf", "env"])
def test_a_bad_setting_is_one_loud_line_and_no_store(settings, via_env):
    with Cluster(ODOO_SRC, {**settings, "expiry": "a week"}, via_env=via_env, size=1) as cluster:
        (node,) = cluster.nodes
        lines = [line for line in node.log().splitlines() if "dkn_auth" in line and "CRITICAL" in line]
        key = "DKN_AUTH_EXPIRY" if via_env else "dkn_auth_expiry"
        assert len(lines) == 1, node.log()[-3000:]
        assert f"{key} = 'a week' must be a whole number" in lines[0]
        assert "fix: set dkn_auth_expiry" in lines[0] and "NOT active" in lines[0]
        sid = node.login()
        assert node.uid(sid) == 2  # Odoo still serves, on its own file sessions
        sessions = node.dir / "data" / "sessions"
        assert any(path.is_file() for path in sessions.rglob("*")), "the session went to Odoo's own files"


def test_pip_installed_addon_is_found_without_addons_path(settings, raw, tmp_path):
    """`pip install .` puts the add-on in odoo/addons of site-packages, the OCA layout."""
    target = tmp_path / "site"
    subprocess.run([ODOO_PYTHON, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    assert (target / "odoo" / "addons" / "dkn_auth" / "__manifest__.py").is_file()
    options = {"addons_path": addons_path(ODOO_SRC, with_repo=False)}
    with Cluster(ODOO_SRC, settings, extra_options=options, extra_env={"PYTHONPATH": str(target)}) as cluster:
        a, b = cluster.nodes
        assert str(target) in a.log(), "dkn_auth was loaded from the pip-installed copy"
        sid = a.login()
        assert b.uid(sid) == 2


def test_installing_from_apps_is_harmless(settings, raw, odoo_db):
    """Installing the add-on in a database (Apps menu) changes nothing but its module state."""
    workdir = tempfile.mkdtemp(prefix="dkn-odoo-install-")
    try:
        result = subprocess.run(
            [ODOO_PYTHON, str(Path(ODOO_SRC, "odoo-bin")), "-d", odoo_db, "-i", "dkn_auth", "--stop-after-init",
             "--addons-path", addons_path(ODOO_SRC), "--db_host", db_params()["host"],
             "--db_port", str(db_params()["port"]), "--db_user", "odoo", "--data-dir", workdir],
            capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not in server_wide_modules" in result.stderr
    with Cluster(ODOO_SRC, settings) as cluster:
        a, b = cluster.nodes
        sid = a.login()
        assert b.uid(sid) == 2
        state = a.call_kw(sid, "ir.module.module", "search_read", [[["name", "=", "dkn_auth"]], ["state"]])
        assert state == [{"id": state[0]["id"], "state": "installed"}]
