"""Every notebook in notebooks/ runs top to bottom against a live gateway.

The gateway serves a fresh topic as table `orders` (the name the notebooks use,
as in the demo), filled with the demo's data generator."""

import os
import pathlib
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import Gateway, unique

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo_gateway(brokers, tmp_path_factory):
    topic = unique("nb-orders")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo_data.py"), "--brokers", brokers,
         "--topic", topic, "--partitions", "3", "--count", "500"],
        check=True, timeout=60,
    )
    config = (ROOT / "deploy" / "kappa.toml").read_text().replace('topic = "orders"', f'topic = "{topic}"')
    assert topic in config, "deploy/kappa.toml no longer declares topic 'orders'"
    # A lake of its own, so the notebook that compacts (snapshots.ipynb) does
    # not write into the checkout.
    lake = tmp_path_factory.mktemp("nb-lake")
    gateway = Gateway(brokers, config, ["--lake", str(lake)])
    gateway.topic = topic  # the notebooks that produce (tail.ipynb) write to it
    gateway.lake = lake
    yield gateway
    gateway.stop()


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, demo_gateway, brokers, monkeypatch):
    monkeypatch.setenv("KAPPA_GATEWAY_URI", demo_gateway.uri)
    monkeypatch.setenv("KAPPA_BROKERS", brokers)
    monkeypatch.setenv("KAPPA_ORDERS_TOPIC", demo_gateway.topic)
    monkeypatch.setenv("KAPPA_LAKE", str(demo_gateway.lake))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
