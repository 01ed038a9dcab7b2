"""Shared fixtures: the real MNIST copy, a real multi-process Dask cluster, tiny synthetic IDX datasets, an
HTTP server on loopback."""

from __future__ import annotations

import base64
import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_prep import PrepConfig, prepare_dataset

from . import REPO
from .synthetic import synthetic_arrays, write_dataset


def mnist_source() -> Path:
    """The exact MNIST copy: $MNIST_SOURCE when it is a folder, else ../shared/data/mnist."""
    env = os.environ.get("MNIST_SOURCE")
    if env and env != "download":
        return Path(env)
    return REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = mnist_source()
    if not (path / "train-images-idx3-ubyte.gz").exists() and not (path / "train-images-idx3-ubyte").exists():
        # Never a skip: a missing dataset must fail loudly, in CI and elsewhere.
        pytest.fail(f"the MNIST IDX files are not in {path}; set MNIST_SOURCE to the folder that holds them")
    return path


@pytest.fixture(scope="session")
def mnist_store(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "mnist.zarr"
    return prepare_dataset(PrepConfig(out=out, source=str(mnist_dir)))


@pytest.fixture(scope="module")
def dask_cluster():
    """A real LocalCluster: 2 worker processes, 1 thread each, everything on loopback.

    One per test module, not per session: modules build the same arrays from the same store, so their
    keys repeat, and a closed client's tasks are forgotten asynchronously. Submitting a graph while the
    previous module's tasks with the same keys were still being released gave distributed's "Detected
    different run_spec" warning and then missing-key errors (seen once in CI: test_model right after
    test_kmeans_parallel on a shared cluster)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit="4GiB",
    ) as cluster:
        yield cluster


@pytest.fixture
def client(dask_cluster):
    from distributed import Client

    with Client(dask_cluster) as client:
        yield client


@pytest.fixture
def http_server():
    """Serve folders on 127.0.0.1: yields a function (folder, auth="user:password" or None) -> base URL;
    counts
    requests per path. With auth, a request without those Basic credentials is answered 401."""
    servers, hits = [], {}

    def handler(auth):
        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hits[self.path] = hits.get(self.path, 0) + 1
                if (
                    auth
                    and self.headers.get("Authorization")
                    != "Basic " + base64.b64encode(auth.encode()).decode()
                ):
                    self.send_error(401, "Unauthorized")
                    return
                super().do_GET()

        return Handler

    def serve(folder, auth=None):
        server = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler(auth), directory=str(folder))
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    serve.hits = hits
    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    return write_dataset(tmp_path / "tiny", synthetic_arrays())


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"  # screenshots the browser tests save (git-ignored)


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (installed by .ci/run; never skipped)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()
