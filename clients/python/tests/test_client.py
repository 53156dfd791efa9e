"""The generated Python client (graphcap_data_client) against the live service and the stand-in bridge."""

from __future__ import annotations

import uuid
from http import HTTPStatus

from conftest import Bridge, fixture_captions, follow
from graphcap_data_client import AuthenticatedClient, Client
from graphcap_data_client.api.batch import (
    batch_archive,
    batch_cancel,
    batch_create,
    batch_failed_items,
    batch_items,
    batch_list,
    batch_restore,
    batch_retry_failed,
    batch_statistics,
    batch_status,
)
from graphcap_data_client.api.captions import captions_generate, captions_get, captions_list
from graphcap_data_client.api.operations import api_health, health
from graphcap_data_client.api.providers import (
    providers_create,
    providers_delete,
    providers_get,
    providers_list,
    providers_update,
)
from graphcap_data_client.api.workspace import workspace_sync
from graphcap_data_client.models import (
    BatchCreateBody,
    BatchCreateBodyConfig,
    BatchRetryFailedResponse200,
    BatchStatisticsResponse200,
    Caption,
    CaptionPage,
    CaptionsGenerateBody,
    Health,
    ItemStatus,
    Job,
    JobDetail,
    JobItemPage,
    JobPage,
    JobStatus,
    JobType,
    Problem,
    Provider,
    ProviderPage,
    ProvidersCreateBody,
    ProvidersCreateBodyEnvironment,
    ProvidersCreateBodyModelsItem,
    ProvidersCreateBodyRateLimits,
    ProvidersUpdateBody,
    WorkspaceSyncResponse200,
)

DATASET = "os_img"
IMAGES = [
    "datasets/os_img/big-buddha-5587706_1280.jpg",
    "datasets/os_img/childs-hand-8845806_640.webp",
    "datasets/os_img/girl-8435339_640.webp",
    "datasets/os_img/highland-cow-8972000_640.jpg",
    "datasets/os_img/new-york-7781184_640.jpg",
    "datasets/os_img/universe-8153526_640.jpg",
    "datasets/os_img/ural-owl-6676441_640.jpg",
]
PERSPECTIVES = ["art_critic", "storytelling"]


def config() -> BatchCreateBodyConfig:
    return BatchCreateBodyConfig(provider="gemini", model="gemini-2.0-flash-exp", temperature=0.4)


def create(client: Client | AuthenticatedClient, **fields: object) -> Job:
    body = BatchCreateBody(config=config(), **fields)  # type: ignore[arg-type]
    response = batch_create.sync_detailed(client=client, body=body)
    assert response.status_code == HTTPStatus.OK, response.content
    assert isinstance(response.parsed, Job)
    return response.parsed


def test_health(client: Client | AuthenticatedClient) -> None:
    result = health.sync(client=client)
    assert isinstance(result, Health)
    assert result.status.value == "ok" and result.database.value == "ok"


def test_api_health_answers_as_graphcap_studio_expects(client: Client | AuthenticatedClient) -> None:
    result = api_health.sync(client=client)
    assert isinstance(result, Health)
    assert (result.status.value, result.service, result.database.value) == ("ok", "graphcap-data-service", "ok")
    assert result.bridge and result.bridge.state.value == "ok"  # type: ignore[union-attr]


def test_providers_crud_never_returns_the_key(client: Client | AuthenticatedClient) -> None:
    key = "sk-python-PLANTED-0123456789"
    body = ProvidersCreateBody(
        name="py-provider",
        kind="openai",
        environment=ProvidersCreateBodyEnvironment.LOCAL,
        base_url="http://127.0.0.1:9/v1",
        api_key=key,
        models=[ProvidersCreateBodyModelsItem(name="m1")],
        default_model="m1",
        rate_limits=ProvidersCreateBodyRateLimits(requests_per_minute=600),
    )
    created = providers_create.sync_detailed(client=client, body=body)
    assert created.status_code == HTTPStatus.OK, created.content
    assert key.encode() not in created.content
    provider = created.parsed
    assert isinstance(provider, Provider)
    assert provider.has_api_key and provider.default_model == "m1" and provider.rate_limits.requests_per_minute == 600

    listed = providers_list.sync(client=client, name_contains="py-provider")
    assert isinstance(listed, ProviderPage) and [p.name for p in listed.items] == ["py-provider"]

    # A one-off caption through it: the key goes from the service to the bridge, never through here.
    made = captions_generate.sync_detailed(
        client=client,
        body=CaptionsGenerateBody(image_path="/workspace/" + IMAGES[6], perspective="graph_caption", provider="py-provider"),
    )
    assert made.status_code == HTTPStatus.OK, made.content
    assert isinstance(made.parsed, Caption) and made.parsed.provider == "py-provider" and made.parsed.job_id is None

    cleared = providers_update.sync(provider.provider_id, client=client, body=ProvidersUpdateBody(api_key=None))
    assert isinstance(cleared, Provider) and not cleared.has_api_key
    gone = providers_delete.sync_detailed(provider.provider_id, client=client)
    assert gone.status_code == HTTPStatus.OK
    missing = providers_get.sync_detailed(provider.provider_id, client=client)
    assert missing.status_code == HTTPStatus.NOT_FOUND and isinstance(missing.parsed, Problem)


def test_imports_the_fixture_workspace(client: Client | AuthenticatedClient) -> None:
    report = workspace_sync.sync(client=client)
    assert isinstance(report, WorkspaceSyncResponse200)
    datasets = {d.name: d for d in report.datasets}
    assert DATASET in datasets
    os_img = datasets[DATASET]
    assert os_img.added + os_img.updated + os_img.unchanged == len(IMAGES)
    assert os_img.removed == 0
    perspectives = report.perspectives
    assert perspectives.added + perspectives.updated + perspectives.unchanged > 0

    # Importing again changes nothing.
    again = workspace_sync.sync(client=client)
    assert isinstance(again, WorkspaceSyncResponse200)
    assert {d.name: (d.added, d.updated, d.removed) for d in again.datasets}[DATASET] == (0, 0, 0)
    assert again.perspectives.added == 0 and again.perspectives.updated == 0


def test_a_dataset_job_runs_to_completion_with_its_captions(
    client: Client | AuthenticatedClient, bridge: Bridge
) -> None:
    job = create(
        client, type_=JobType.DATASET_PERSPECTIVE, dataset_name=DATASET, perspectives=PERSPECTIVES, user_id="py"
    )
    assert job.status in {JobStatus.PENDING, JobStatus.RUNNING}
    assert job.total_images == len(IMAGES) * len(PERSPECTIVES)

    done = follow(client, job.job_id)
    assert done.status == JobStatus.COMPLETED
    assert (done.processed_images, done.failed_images, done.progress) == (14, 0, 100)
    assert done.started_at is not None and done.completed_at is not None

    # Its items carry the captions the bridge made: the fixture's real ones.
    page = batch_items.sync(job.job_id, client=client, limit=100)
    assert isinstance(page, JobItemPage)
    assert page.total == 14 and len(page.items) == 14
    expected = {p: fixture_captions(p) for p in PERSPECTIVES}
    for item in page.items:
        assert item.status == ItemStatus.COMPLETED
        assert item.caption_id is not None and item.result is not None
        name = item.image_path.rsplit("/", 1)[-1]
        assert item.result.to_dict() == expected[item.perspective][name], (item.image_path, item.perspective)

    # The captions are stored: one per item, found by the item's captionId and by the job.
    first = page.items[0]
    caption = captions_get.sync(first.caption_id, client=client)  # type: ignore[arg-type]
    assert isinstance(caption, Caption)
    assert (caption.job_id, caption.item_id, caption.image_path, caption.perspective) == (
        job.job_id,
        first.item_id,
        first.image_path,
        first.perspective,
    )
    assert caption.result.to_dict() == first.result.to_dict()  # type: ignore[union-attr]
    assert caption.provider == "gemini" and caption.model == "gemini-2.0-flash-exp"
    by_job = captions_list.sync(client=client, job_id=job.job_id, limit=100)
    assert isinstance(by_job, CaptionPage)
    assert by_job.total == 14
    assert {c.caption_id for c in by_job.items} == {i.caption_id for i in page.items}

    # The status endpoint filters its page of items; the list filters by perspective.
    detail = batch_status.sync(job.job_id, client=client, item_status=[ItemStatus.COMPLETED], limit=5)
    assert isinstance(detail, JobDetail)
    assert detail.items.total == 14 and len(detail.items.items) == 5
    stories = batch_items.sync(job.job_id, client=client, perspective="storytelling")
    assert isinstance(stories, JobItemPage)
    assert stories.total == 7 and {i.perspective for i in stories.items} == {"storytelling"}

    # The job is listed among completed ones; then archived and restored.
    listed = batch_list.sync(client=client, status=[JobStatus.COMPLETED], user_id="py")
    assert isinstance(listed, JobPage)
    assert job.job_id in [j.job_id for j in listed.items]
    archived = batch_archive.sync(job.job_id, client=client)
    assert isinstance(archived, Job) and archived.archived
    in_archive = batch_list.sync(client=client, archived=True, user_id="py")
    assert isinstance(in_archive, JobPage) and job.job_id in [j.job_id for j in in_archive.items]
    restored = batch_restore.sync(job.job_id, client=client)
    assert isinstance(restored, Job) and not restored.archived

    stats = batch_statistics.sync(client=client)
    assert isinstance(stats, BatchStatisticsResponse200)
    assert stats.jobs.completed >= 1 and stats.items.completed >= 14


def test_failed_items_are_retried_until_the_job_completes(client: Client | AuthenticatedClient, bridge: Bridge) -> None:
    bridge.control(permanentFailures={"girl-8435339_640.webp": "unsupported image"})
    job = create(client, type_=JobType.MULTI_PERSPECTIVE, image_paths=IMAGES[1:3], perspectives=["art_critic"])

    partial = follow(client, job.job_id)
    assert partial.status == JobStatus.PARTIAL
    assert (partial.processed_images, partial.failed_images) == (1, 1)
    failed = batch_failed_items.sync(job.job_id, client=client)
    assert isinstance(failed, JobItemPage)
    assert [(i.image_path, i.status) for i in failed.items] == [(IMAGES[2], ItemStatus.FAILED)]
    assert "unsupported image" in (failed.items[0].error or "")

    bridge.control(permanentFailures={})
    retried = batch_retry_failed.sync(job.job_id, client=client)
    assert isinstance(retried, BatchRetryFailedResponse200)
    assert retried.retried == 1
    assert retried.job.status == JobStatus.PENDING

    done = follow(client, job.job_id)
    assert done.status == JobStatus.COMPLETED
    assert (done.processed_images, done.failed_images, done.progress) == (2, 0, 100)


def test_a_running_job_is_cancelled(client: Client | AuthenticatedClient, bridge: Bridge) -> None:
    # The bridge holds this image's calls open, so the job is surely still running when cancelled.
    bridge.control(hangImages=["universe-8153526_640.jpg"])
    job = create(client, type_=JobType.MULTI_PERSPECTIVE, image_paths=[IMAGES[5]], perspectives=PERSPECTIVES)
    follow(client, job.job_id, until={JobStatus.RUNNING})

    cancelled = batch_cancel.sync(job.job_id, client=client)
    assert isinstance(cancelled, Job)
    assert cancelled.status == JobStatus.CANCELLED
    items = batch_items.sync(job.job_id, client=client)
    assert isinstance(items, JobItemPage)
    assert {i.status for i in items.items} == {ItemStatus.CANCELLED}

    # Cancelling a finished job is a conflict, as a typed problem.
    again = batch_cancel.sync_detailed(job.job_id, client=client)
    assert again.status_code == HTTPStatus.CONFLICT
    assert isinstance(again.parsed, Problem)
    assert again.parsed.status == 409 and again.parsed.code == "CONFLICT"


def test_an_unknown_job_is_a_typed_404(client: Client | AuthenticatedClient) -> None:
    job_id = uuid.uuid4()
    response = batch_status.sync_detailed(job_id, client=client)
    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.parsed
    assert isinstance(problem, Problem)
    assert (problem.status, problem.code, problem.title) == (404, "NOT_FOUND", "Not Found")
    assert str(job_id) in problem.detail


def test_invalid_input_is_a_typed_400_naming_each_field(client: Client | AuthenticatedClient) -> None:
    body = BatchCreateBody(
        type_=JobType.MULTI_PERSPECTIVE,
        perspectives=["art_critic", "no_such_perspective"],
        image_paths=["datasets/os_img/not-there.jpg"],
        config=config(),
    )
    response = batch_create.sync_detailed(client=client, body=body)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    problem = response.parsed
    assert isinstance(problem, Problem)
    assert problem.status == 400 and problem.code == "BAD_REQUEST"
    paths = sorted(e.path for e in problem.errors)  # type: ignore[union-attr]
    assert paths == ["imagePaths.0", "perspectives.1"]

    # A malformed path parameter is a 400 too (the client lets a str through where a UUID is typed).
    bad_id = batch_status.sync_detailed("not-a-uuid", client=client)  # type: ignore[arg-type]
    assert bad_id.status_code == HTTPStatus.BAD_REQUEST
    assert isinstance(bad_id.parsed, Problem)
    assert bad_id.parsed.errors and bad_id.parsed.errors[0].path == "jobId"
