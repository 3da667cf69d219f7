"""TLS, sign-in and grants with real clients: ADBC and pyarrow.flight over TLS (and mutual TLS),
Basic sign-in returning a Bearer token, static tokens that expire, and a user who may neither read
nor list a table they were not granted."""

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight
import pytest

from conftest import AUTH_HEADER, TLS_ROOT, Gateway, flight_sql_command


def connect(secured, **options):
    return flightsql.connect(secured["uri"], db_kwargs={TLS_ROOT: secured["ca"], **options}, autocommit=True)


def query(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def test_tls_with_a_password_reads_the_granted_tables(secured):
    with connect(secured, username="analyst", password="s3cret") as conn:
        assert query(conn, f"SELECT count(*) AS n FROM {secured['orders']}").to_pylist() == [{"n": 5}]


def test_without_tls_or_credentials_nothing_is_served(secured):
    plain = f"grpc://{secured['gateway'].address}"
    with pytest.raises(Exception):
        with flightsql.connect(plain, autocommit=True) as conn:
            query(conn, "SELECT 1")
    with pytest.raises(flightsql.Error) as refused:
        with connect(secured) as conn:
            query(conn, "SELECT 1")
    assert "Unauthenticated" in str(refused.value) or "UNAUTHENTICATED" in str(refused.value), refused.value
    with pytest.raises(flightsql.Error) as wrong:
        with connect(secured, username="analyst", password="guess") as conn:
            query(conn, "SELECT 1")
    assert "wrong user name or password" in str(wrong.value), wrong.value


def test_basic_sign_in_returns_a_bearer_token_for_later_calls(secured):
    client = flight.FlightClient(secured["uri"], tls_root_certs=secured["ca"])
    name, value = client.authenticate_basic_token("analyst", "s3cret")
    assert name == b"authorization" and value.startswith(b"Bearer kappa1."), (name, value)
    with connect(secured, **{AUTH_HEADER: value.decode()}) as conn:
        assert query(conn, f"SELECT max(_offset) AS m FROM {secured['orders']}").to_pylist() == [{"m": 4}]
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("analyst", "wrong")
    client.close()


def test_static_tokens_work_until_they_expire(secured):
    with connect(secured, **{AUTH_HEADER: "Bearer bi-token"}) as conn:
        assert query(conn, f"SELECT count(*) AS n FROM {secured['orders']}").num_rows == 1
    with pytest.raises(flightsql.Error) as expired:
        with connect(secured, **{AUTH_HEADER: "Bearer old-token"}) as conn:
            query(conn, "SELECT 1")
    assert "expired" in str(expired.value), expired.value


def test_a_table_not_granted_can_be_neither_read_nor_listed(secured):
    secrets = secured["secrets"]
    with connect(secured, username="analyst", password="s3cret") as conn:
        for sql in (f"SELECT * FROM {secrets}", f"SELECT * FROM kafka.default.{secrets}",
                    f"SELECT o._offset FROM {secured['orders']} o JOIN {secrets} s ON o._offset = s._offset",
                    f"SELECT * FROM tail('{secrets}', 'earliest')"):
            with pytest.raises(flightsql.Error) as denied:
                query(conn, sql)
            assert "PermissionDenied" in str(denied.value) or "PERMISSION_DENIED" in str(denied.value), sql
            assert f"may not read default.{secrets}" in str(denied.value), denied.value
        listed = {t["table_name"] for c in conn.adbc_get_objects(depth="tables").read_all().to_pylist()
                  for s in c["catalog_db_schemas"] for t in (s["db_schema_tables"] or [])}
        assert secured["orders"] in listed and secrets not in listed, listed
        shown = query(conn, "SELECT table_name FROM information_schema.tables").column(0).to_pylist()
        assert secured["orders"] in shown and secrets not in shown
        assert "partitions" in shown and "streams" not in shown, "system tables are granted one by one"
    schemas = lambda conn: {s["db_schema_name"] for c in conn.adbc_get_objects(depth="db_schemas").read_all()  # noqa: E731
                            .to_pylist() for s in c["catalog_db_schemas"]}
    with connect(secured, **{AUTH_HEADER: "Bearer no-system-token"}) as conn:
        assert "system" not in schemas(conn) and "default" in schemas(conn), schemas(conn)
    with connect(secured, username="admin", password="root-pw") as conn:
        assert "system" in schemas(conn)
        assert query(conn, f"SELECT count(*) AS n FROM {secrets}").to_pylist() == [{"n": 5}]


def test_mutual_tls_needs_a_client_certificate_from_the_ca(brokers, pki):
    paths = pki["paths"]
    gateway = Gateway(brokers, extra_args=["--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"]),
                                           "--tls-client-ca", str(paths["ca"])])
    uri = f"grpc+tls://{gateway.address}"
    try:
        with flightsql.connect(uri, autocommit=True, db_kwargs={
                TLS_ROOT: pki["ca"].decode(),
                "adbc.flight.sql.client_option.mtls_cert_chain": pki["client_cert"].decode(),
                "adbc.flight.sql.client_option.mtls_private_key": pki["client_key"].decode()}) as conn:
            assert query(conn, "SELECT 1 AS one").to_pylist() == [{"one": 1}]
        with pytest.raises(Exception):
            with flightsql.connect(uri, autocommit=True, db_kwargs={TLS_ROOT: pki["ca"].decode()}) as conn:
                query(conn, "SELECT 1")
    finally:
        gateway.stop()


def test_a_ticket_planned_for_one_user_is_planned_again_for_another(secured):
    """GetFlightInfo keeps its plan for the ticket's DoGet; another caller's DoGet of that ticket does
    not get it, but is planned again under its own grants."""
    client = flight.FlightClient(secured["uri"], tls_root_certs=secured["ca"])
    admin = flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", "root-pw")])
    analyst = flight.FlightCallOptions(headers=[client.authenticate_basic_token("analyst", "s3cret")])
    descriptor = flight.FlightDescriptor.for_command(flight_sql_command(f"SELECT _offset FROM {secured['secrets']}"))
    info = client.get_flight_info(descriptor, admin)
    ticket = info.endpoints[0].ticket
    with pytest.raises(flight.FlightUnauthorizedError, match=f"may not read default.{secured['secrets']}"):
        client.do_get(ticket, analyst).read_all()
    # The admin's own DoGet, then the same ticket again (planned anew): the same rows.
    info = client.get_flight_info(descriptor, admin)
    first = client.do_get(info.endpoints[0].ticket, admin).read_all()
    again = client.do_get(info.endpoints[0].ticket, admin).read_all()
    assert first.column(0).to_pylist() == again.column(0).to_pylist() == [0, 1, 2, 3, 4]
    client.close()
