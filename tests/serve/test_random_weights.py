"""The server says random weights where a user looks (issue 32 item 2): /v1/health and the page."""

from __future__ import annotations

import httpx


def test_the_server_says_it_in_health_and_on_its_page(serve_backbone):
    from dinomask.serve.app import ServeConfig, create_app
    from tests.serve.conftest import running

    with running(create_app(serve_backbone, ServeConfig())) as url:
        health = httpx.get(f"{url}/v1/health").json()
        assert health["random_weights"]  # why they are random, e.g. written by 'dinomask random-model'
        page = httpx.get(url).text
        script = httpx.get(f"{url}/static/app.js").text
    assert 'id="random-banner"' in page and "RANDOM WEIGHTS" in script and "/v1/health" in script
