"""The private PostgreSQL cluster the store tests will run against (tests/pg.py): it starts on loopback,
gives each test its own database, survives a restart (for outage tests) and leaves nothing behind."""

from __future__ import annotations

import socket

import pytest

from tests.pg import PostgresCluster, server_bin

pytestmark = pytest.mark.skipif(server_bin() is None, reason="PostgreSQL is not installed (make test installs it)")


@pytest.fixture(scope="module")
def cluster():
    c = PostgresCluster(fsync=False)
    c.start()
    yield c
    c.stop()


def test_it_listens_on_loopback_only(cluster):
    assert cluster.psql("SHOW listen_addresses") == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=2):
        pass


def test_each_database_is_new_and_empty(cluster):
    url = cluster.create_database("contract_a")
    assert url.endswith(f":{cluster.port}/contract_a")
    assert cluster.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", "contract_a") == "0"
    cluster.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (7)", "contract_a")
    cluster.create_database("contract_b")
    assert cluster.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", "contract_b") == "0"


def test_data_survives_a_restart(cluster):
    cluster.create_database("restart")
    cluster.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (42)", "restart")
    cluster.restart(down_for=0.2)
    assert cluster.psql("SELECT x FROM t", "restart") == "42"


def test_stop_removes_everything():
    c = PostgresCluster(fsync=False)
    c.start()
    assert (c.data / "PG_VERSION").exists()
    c.stop()
    assert not c.base.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", c.port), timeout=1).close()
