"""Fixtures of the Python client's suite: a client of the live service and the stand-in bridge's controls.

The service and the stand-in Inference Bridge are started outside pytest (scripts/python-client-tests.sh
does it for CI and for `npm run test:python`), and found through:
  GRAPHCAP_URL         the service, e.g. http://127.0.0.1:32590
  GRAPHCAP_BRIDGE_URL  the stand-in bridge the service dispatches to (its /__control endpoint)
  GRAPHCAP_TOKEN       a bearer token, when the service runs with API_TOKEN (optional)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from graphcap_data_client import AuthenticatedClient, Client
from graphcap_data_client.api.batch import batch_status
from graphcap_data_client.models import Job, JobDetail, JobStatus

FIXTURE_WORKSPACE = Path(
    os.environ.get(
        "GRAPHCAP_FIXTURE_WORKSPACE",
        Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "graphcap-workspace",
    )
)
ACTIVE = {JobStatus.PENDING, JobStatus.RUNNING}
# How long a job may take before the suite gives up on it: a guard against a hang, not a timing check.
FOLLOW_LIMIT_SECONDS = 180


@pytest.fixture(scope="session")
def base_url() -> str:
    url = os.environ.get("GRAPHCAP_URL")
    if not url:
        pytest.fail("GRAPHCAP_URL is not set: start the service first (scripts/python-client-tests.sh does)")
    return url


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[Client | AuthenticatedClient]:
    token = os.environ.get("GRAPHCAP_TOKEN")
    # raise_on_unexpected_status: a status the document does not list fails the test loudly.
    c: Client | AuthenticatedClient = (
        AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True, timeout=httpx.Timeout(30))
        if token
        else Client(base_url=base_url, raise_on_unexpected_status=True, timeout=httpx.Timeout(30))
    )
    with c as opened:
        yield opened


class Bridge:
    """The stand-in Inference Bridge's run-time controls (not part of the service's API)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def control(self, **settings: object) -> None:
        response = httpx.post(f"{self.url}/__control", json=settings, timeout=10)
        response.raise_for_status()

    def reset(self) -> None:
        self.control(permanentFailures={}, hangImages=[], errorRate=0, hangRate=0)


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    url = os.environ.get("GRAPHCAP_BRIDGE_URL")
    if not url:
        pytest.fail(
            "GRAPHCAP_BRIDGE_URL is not set: start the stand-in bridge (npm run bridge) and the service with it"
        )
    b = Bridge(url)
    b.reset()
    yield b
    b.reset()


def follow(client: Client | AuthenticatedClient, job_id: UUID, until: set[JobStatus] | None = None) -> Job:
    """Polls the job's status until it leaves pending/running (or reaches one of `until`)."""
    deadline = time.monotonic() + FOLLOW_LIMIT_SECONDS
    while True:
        detail = batch_status.sync(job_id, client=client, limit=1)
        assert isinstance(detail, JobDetail), detail
        job = detail.job
        if (until is not None and job.status in until) or (until is None and job.status not in ACTIVE):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status.value} after {FOLLOW_LIMIT_SECONDS} s")
        time.sleep(0.2)


def fixture_captions(perspective: str) -> dict[str, dict]:
    """The fixture's real captions for a perspective, by image file name (what the stand-in bridge answers)."""
    path = FIXTURE_WORKSPACE / "datasets" / "os_img" / "analysis" / f"batch_{perspective}" / "captions.jsonl"
    captions = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            captions[Path(entry["filename"]).name] = entry["parsed"]
    return captions
