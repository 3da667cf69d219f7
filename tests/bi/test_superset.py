"""Apache Superset 6.1 over kappa, set up as a user would: a database with flightsql-dbapi's
`datafusion://` URI (Superset has no Flight SQL engine spec, so the generic one), its table list, a
dataset on a topic's table and a bar chart of orders per region. The chart's data must be what was
produced to Kafka, and headless Chromium must draw it: bars in proportion to those counts. Over TLS
with a token, Superset lists and queries only what the token's user is granted."""

import datetime
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import REGIONS

DEADLINE_S = 90
ADMIN = ("admin", secrets.token_hex(8))
# The first colour of Superset's default categorical scheme (supersetColors): a one-metric bar
# chart draws every bar in it.
SERIES_COLOUR = (0x1F, 0xA8, 0xC9)
CONFIG = """
SECRET_KEY = {secret!r}
SQLALCHEMY_DATABASE_URI = "sqlite:///{folder}/superset.db"
# No CSRF tokens: the REST calls (with a JWT) would need one from /api/v1/security/csrf_token/.
WTF_CSRF_ENABLED = False
TALISMAN_ENABLED = False
# Every chart request reaches the gateway: no answer comes from a cache.
DATA_CACHE_CONFIG = {{"CACHE_TYPE": "NullCache"}}
"""


class Superset:
    """Superset with its metadata in `folder` (SQLite), served by gunicorn on a port the OS picks."""

    def __init__(self, folder):
        folder.joinpath("superset_config.py").write_text(
            CONFIG.format(secret=secrets.token_hex(32), folder=folder))
        self.env = dict(os.environ, SUPERSET_CONFIG_PATH=str(folder / "superset_config.py"), SUPERSET_HOME=str(folder))
        self.log = folder / "superset.log"
        self.cli("db", "upgrade")
        self.cli("fab", "create-admin", "--username", ADMIN[0], "--password", ADMIN[1],
                 "--firstname", "kappa", "--lastname", "test", "--email", "admin@example.invalid")
        self.cli("init")
        self.process = subprocess.Popen(
            [self._bin("gunicorn"), "--workers", "1", "--threads", "4", "--timeout", "120", "--no-control-socket",
             "--bind", "127.0.0.1:0", "superset.app:create_app()"],
            stderr=subprocess.PIPE, text=True, env=self.env)
        self.url = self._wait_for_url()

    @staticmethod
    def _bin(name):
        """A console script of this virtual environment."""
        return str(Path(sys.executable).parent / name)

    def cli(self, *args):
        with self.log.open("a") as log:
            run = subprocess.run([self._bin("superset"), *args], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        assert run.returncode == 0, f"superset {' '.join(args)} failed:\n{self.log.read_text()[-3000:]}"

    def _wait_for_url(self):
        """gunicorn's `Listening at: URL`, then until /health answers. Its log goes on to a file."""
        found = threading.Event()
        address = {}

        def read():
            with self.log.open("a") as log:
                for line in self.process.stderr:
                    log.write(line)
                    log.flush()
                    if "Listening at: " in line and not found.is_set():
                        address["url"] = line.split("Listening at: ", 1)[1].split()[0]
                        found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + DEADLINE_S
        if found.wait(DEADLINE_S):
            while time.monotonic() < deadline:
                try:
                    if requests.get(address["url"] + "/health", timeout=5).text == "OK":
                        return address["url"]
                except (requests.ConnectionError, requests.Timeout):
                    pass  # not listening yet, or still loading (a /health that takes over 5 s)
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Superset did not come up:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Api:
    """Superset's REST API, signed in with a JWT from /api/v1/security/login."""

    def __init__(self, url):
        self.url = url
        self.http = requests.Session()
        token = self.call("POST", "/api/v1/security/login", json={
            "username": ADMIN[0], "password": ADMIN[1], "provider": "db", "refresh": True})["access_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method, path, expect=200, **kwargs):
        answer = self.http.request(method, self.url + path, timeout=DEADLINE_S, **kwargs)
        assert answer.status_code == expect, f"{method} {path}: {answer.status_code} {answer.text[:2000]}"
        return answer.json()


@pytest.fixture(scope="module")
def superset(tmp_path_factory):
    server = Superset(tmp_path_factory.mktemp("superset"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(superset):
    return Api(superset.url)


@pytest.fixture(scope="module")
def database(api, sales):
    """kappa as a Superset database, through flightsql-dbapi's dialect."""
    created = api.call("POST", "/api/v1/database/", expect=201, json={
        "database_name": f"kappa {sales['table']}",
        "sqlalchemy_uri": f"datafusion://{sales['host']}:{sales['port']}?insecure=True",
        "expose_in_sqllab": True})
    return created["id"]


def chart_form(dataset, x_axis):
    """A bar chart of COUNT(*) per `x_axis` (the form Explore saves), and the query context the
    chart data endpoint runs (what Explore's buildQuery would send for it)."""
    form = {"datasource": f"{dataset}__table", "viz_type": "echarts_timeseries_bar", "x_axis": x_axis,
            "metrics": ["count"], "groupby": [], "adhoc_filters": [], "row_limit": 100,
            "color_scheme": "supersetColors", "show_legend": False}
    query = {"datasource": {"id": dataset, "type": "table"}, "force": False, "form_data": form,
             "result_format": "json", "result_type": "full",
             "queries": [{"columns": [x_axis], "metrics": ["count"], "orderby": [["count", False]],
                          "row_limit": 100, "filters": [], "extras": {}}]}
    return form, query


@pytest.fixture(scope="module")
def chart(api, database, sales):
    """A dataset on the sales table and a bar chart of orders per region over it."""
    dataset = api.call("POST", "/api/v1/dataset/", expect=201, json={
        "database": database, "schema": "default", "table_name": sales["table"]})["id"]
    form, query = chart_form(dataset, "region")
    created = api.call("POST", "/api/v1/chart/", expect=201, json={
        "slice_name": "orders per region", "viz_type": form["viz_type"], "datasource_id": dataset,
        "datasource_type": "table", "params": json.dumps(form), "query_context": json.dumps(query)})
    return {"id": created["id"], "dataset": dataset}


def test_superset_lists_the_topics_as_tables(api, database, sales):
    schemas = api.call("GET", f"/api/v1/database/{database}/schemas/")["result"]
    assert "default" in schemas, schemas
    tables = api.call("GET", f"/api/v1/database/{database}/tables/", params={"q": "(schema_name:default,force:!t)"})
    names = {t["value"]: t["type"] for t in tables["result"]}
    assert names.get(sales["table"]) == "table" and names.get(sales["topic"]) == "table", names


def test_the_dataset_has_typed_columns(api, chart):
    columns = {c["column_name"]: c for c in api.call("GET", f"/api/v1/dataset/{chart['dataset']}")["result"]["columns"]}
    assert columns["_timestamp"]["is_dttm"], "Superset takes _timestamp for the time column"
    assert {name: columns[name]["type"] for name in ("id", "region", "amount")} == {
        "id": "BIGINT", "region": "TEXT", "amount": "FLOAT"}


def test_chart_data_is_what_was_produced(api, chart):
    (result,) = api.call("GET", f"/api/v1/chart/{chart['id']}/data/")["result"]
    assert result["status"] == "success" and result["error"] is None, result
    assert {row["region"]: row["count"] for row in result["data"]} == REGIONS


def test_kappas_engine_spec_buckets_by_time_grain_and_filters_by_time(api, chart):
    """deploy/superset's engine spec (installed beside Superset): a time-series query by day over
    the last seven days truncates `_timestamp` with date_trunc and bounds it with timestamp literals, which
    kappa narrows to a range of the log. The generic spec has no time grains at all."""
    engines = api.call("GET", "/api/v1/database/available/")["databases"]
    assert any(e["engine"] == "datafusion" and e["name"] == "kappa (Arrow Flight SQL)" for e in engines), engines
    by_day = {"columns": [{"timeGrain": "P1D", "columnType": "BASE_AXIS", "sqlExpression": "_timestamp",
                           "label": "_timestamp", "expressionType": "SQL"}],
              "metrics": ["count"], "filters": [{"col": "_timestamp", "op": "TEMPORAL_RANGE", "val": 'DATEADD(DATETIME("now"), -7, day) : now'}],
              "orderby": [], "row_limit": 100, "extras": {}}
    answer = api.call("POST", "/api/v1/chart/data", json={
        "datasource": {"id": chart["dataset"], "type": "table"}, "force": True,
        "result_format": "json", "result_type": "full", "queries": [by_day]})
    (result,) = answer["result"]
    assert "date_trunc('day', _timestamp)" in result["query"], result["query"]
    assert "_timestamp >= TIMESTAMP '" in result["query"], result["query"]
    today = datetime.datetime.now(datetime.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    assert result["data"] == [{"_timestamp": int(today.timestamp() * 1000), "count": sum(REGIONS.values())}], result["query"]


def test_superset_over_tls_with_a_token_sees_and_queries_only_granted_tables(api, secured):
    """The gateway with TLS and sign-in on: Superset's database URL carries a static token (the
    dialect cannot name a CA, so verification is off), lists only what the token's user is granted,
    and runs SQL Lab queries under those grants."""
    address = secured["gateway"].address
    database = api.call("POST", "/api/v1/database/", expect=201, json={
        "database_name": "kappa over TLS", "expose_in_sqllab": True,
        "sqlalchemy_uri": f"datafusion://{address}?disable_server_verification=True&token=bi-token"})["id"]
    tables = api.call("GET", f"/api/v1/database/{database}/tables/", params={"q": "(schema_name:default,force:!t)"})
    names = {t["value"] for t in tables["result"]}
    assert secured["orders"] in names and secured["secrets"] not in names, names

    def sql_lab(sql, expect=200):
        return api.call("POST", "/api/v1/sqllab/execute/", expect=expect, json={
            "database_id": database, "sql": sql, "schema": "default", "runAsync": False})

    assert sql_lab(f"SELECT sum(n) AS total FROM {secured['orders']}")["data"] == [{"total": 10}]
    # Superset answers a database's error with 500 and the driver's message.
    refused = sql_lab(f"SELECT count(*) FROM {secured['secrets']}", expect=500)
    assert f"permission denied: you may not read default.{secured['secrets']}" in refused["errors"][0]["message"]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, through chromium-driver (no driver download)."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    yield driver
    driver.quit()


def sign_in(browser, url):
    browser.get(f"{url}/login/")
    wait = WebDriverWait(browser, DEADLINE_S)
    wait.until(lambda b: b.find_elements(By.ID, "username"))[0].send_keys(ADMIN[0])
    browser.find_element(By.ID, "password").send_keys(ADMIN[1])
    browser.find_element(By.CSS_SELECTOR, '[data-test="login-button"]').click()
    wait.until(lambda b: "/login" not in b.current_url)


def rendered_chart(browser):
    """The chart's drawing once it stops changing (ECharts animates the bars in), or the error
    Explore shows instead."""
    WebDriverWait(browser, DEADLINE_S).until(lambda b: b.find_elements(
        By.CSS_SELECTOR, '[data-test="chart-container"] canvas, [role="alert"]'))
    alerts = browser.find_elements(By.CSS_SELECTOR, '[role="alert"]')
    assert not alerts, f"Explore shows an error: {alerts[0].text}"
    canvas = browser.find_element(By.CSS_SELECTOR, '[data-test="chart-container"] canvas')
    shot, deadline = canvas.screenshot_as_png, time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
        previous, shot = shot, canvas.screenshot_as_png
        if shot == previous:
            return shot
    raise AssertionError("the chart never stopped changing")


def bar_heights(png, colour=SERIES_COLOUR, tolerance=12, min_width=5):
    """Heights in pixels of the bars drawn in `colour`, left to right: the runs of adjacent pixel
    columns holding a vertical run of that colour, each as the median of its columns' longest run."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    pixels = image.load()

    def longest_run(x):
        longest = current = 0
        for y in range(height):
            current = current + 1 if all(abs(a - b) <= tolerance for a, b in zip(pixels[x, y], colour)) else 0
            longest = max(longest, current)
        return longest

    columns = [longest_run(x) for x in range(width)] + [0]
    bars, start = [], None
    for x, run in enumerate(columns):
        if run and start is None:
            start = x
        elif not run and start is not None:
            if x - start >= min_width:
                bars.append(statistics.median(columns[start:x]))
            start = None
    return bars


def test_headless_chromium_draws_the_chart(superset, chart, browser, tmp_path):
    sign_in(browser, superset.url)
    browser.get(f"{superset.url}/explore/?slice_id={chart['id']}")
    png = rendered_chart(browser)
    (tmp_path / "chart.png").write_bytes(png)
    heights = bar_heights(png)
    assert len(heights) == len(REGIONS), f"bars {heights} in {tmp_path / 'chart.png'}"
    # One bar per region, its height in proportion to the region's count (the axis starts at 0).
    scale = max(heights) / max(REGIONS.values())
    for drawn, count in zip(sorted(heights), sorted(REGIONS.values())):
        assert drawn == pytest.approx(count * scale, rel=0.05), (heights, REGIONS, tmp_path / "chart.png")
