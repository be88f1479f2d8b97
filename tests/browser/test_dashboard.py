"""The dashboard in a real browser (Debian's headless Chromium through Playwright) against a
real orchestrator process and a real worker process.

Each test acts as a person would: logs in with a key through the form, clicks, reads what the
page shows. Screenshots of every page land in `tmp/artifacts/browser/` (or under
`$IMAGEFLEET_TEST_ARTIFACTS`), so a failed run can be looked at.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from imagefleet.protocol import JobStatus
from tests.e2e.conftest import Fleet, FleetFactory, fleet_template  # noqa: F401
from tests.harness.fleet import create_key
from tests.training_jobs import dataset_zip, train_params

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("IMAGEFLEET_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("IMAGEFLEET_TEST_ARTIFACTS", "tmp/artifacts")) / "browser"
TIMEOUT_MS = 60_000
VIEWPORT = {"width": 1440, "height": 900}
# A worker imports torch and diffusers before its first claim: slow on a shared, loaded machine.
WORKER_START_TIMEOUT = 240.0
# Conditions, not clocks: waits end as soon as the page shows what is expected; the bound is
# only there so that a broken page fails instead of hanging (a loaded CI machine is slow).
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run scripts/ensure-chromium (installs Debian's chromium) "
            "or set IMAGEFLEET_CHROMIUM"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, fleet_template) -> Iterator[Fleet]:  # noqa: F811
    """One orchestrator (which also knows the toy `echo` kind, which its worker does not serve,
    so a stand-in flaky node can fail one) and one real worker; one failure quarantines. The
    worker's `cpu` is priced, so that pages show cost in money."""
    factory = FleetFactory(tmp_path_factory.mktemp("browser"), fleet_template)
    try:
        fleet = factory(
            workers=0,
            kind_plugins="tests.toy_kind",
            quarantine_failures="1",
            gpu_prices='{"cpu": 0.5}',
        )
        fleet.worker_env["IMAGEFLEET_PREVIEW_EVERY"] = "1"  # a preview after every step
        fleet.start_workers(1, timeout=WORKER_START_TIMEOUT)
        yield fleet
    finally:
        factory.close()


@pytest.fixture(scope="module")
def admin_key(fleet: Fleet) -> str:
    return create_key(fleet.data_dir, "ops", "admin")


@pytest.fixture(scope="module", autouse=True)
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


def logged_in(browser: Browser, fleet: Fleet, key: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{fleet.url}/ui")
    page.fill("#login-key", key)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#shell")).to_be_visible()
    return context, page


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def image_loaded(page: Page, selector: str) -> bool:
    """Whether the first image matching `selector` decoded (its bytes came through the
    session cookie: an <img> cannot send a Bearer header)."""
    return bool(page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0"))


def test_a_client_submits_from_the_form_watches_progress_and_finds_the_image(
    browser: Browser, fleet: Fleet
) -> None:
    context, page = logged_in(browser, fleet, fleet.keys.alice)
    page.wait_for_selector(".stat")
    shot(page, "login-overview-client")

    page.click("a[data-page=submit]")
    page.fill("#submit-prompt", "a lighthouse at dusk, oil painting")
    page.select_option("#submit-width", "64")
    page.select_option("#submit-height", "64")
    page.fill("#submit-steps", "4")
    page.fill("#submit-seed", "7")
    page.click("#submit-button")
    link = page.locator("#submit-job-link")
    job_id = link.inner_text()
    done = page.locator('#submit-result .bar[aria-valuenow="100"]')
    expect(done).to_be_visible()
    expect(page.locator("#submit-result .badge-succeeded")).to_be_visible()
    page.wait_for_selector("#submit-result .output img")
    page.wait_for_function(
        "() => { const i = document.querySelector('#submit-result .output img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    shot(page, "submit")
    assert fleet.client.get(job_id).status is JobStatus.succeeded
    # The worker sent a preview before the image (steps 1-3 of 4, each before the next step):
    # the newest one is still there to read, as the page read it while the job ran.
    preview = page.request.get(f"{fleet.url}/v1/jobs/{job_id}/preview")
    assert preview.status == 200 and preview.headers["content-type"] == "image/jpeg"
    assert preview.headers["x-imagefleet-preview-step"] == "3"
    assert Image.open(io.BytesIO(preview.body())).size == (64, 64)

    page.click("a[data-page=gallery]")
    tile = page.locator(f'.gallery a[href="#/job/{job_id}"] img')
    expect(tile).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gallery img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "gallery")

    tile.click()
    expect(page.locator(".page-head h1")).to_contain_text(job_id)
    expect(page.locator(".live .badge-succeeded")).to_be_visible()
    page.wait_for_selector(".output img")
    assert image_loaded(page, ".output img")
    expect(page.locator(".kv").first).to_contain_text("a lighthouse at dusk")
    expect(page.locator(".table .badge-succeeded").first).to_be_visible()  # the attempt
    expect(page.locator("#job-cost")).to_contain_text("$")
    expect(page.locator("#job-cost")).to_contain_text("per image")
    expect(page.locator("#tenant-note")).to_have_count(0)
    shot(page, "job")

    page.click("a[data-page=jobs]")
    expect(page.locator(f'a[href="#/job/{job_id}"]')).to_be_visible()
    page.select_option("#filter-status", "failed")
    expect(page.locator(f'a[href="#/job/{job_id}"]')).to_have_count(0)
    page.select_option("#filter-status", "succeeded")
    expect(page.locator(f'a[href="#/job/{job_id}"]')).to_be_visible()
    shot(page, "jobs")

    # The key lives in an HttpOnly cookie: no script, URL or storage of the page holds it.
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("JSON.stringify(sessionStorage) + JSON.stringify(localStorage)") == "{}{}"
    assert fleet.keys.alice not in page.url
    cookies = context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
        ("imagefleet_session", True, "Strict")
    ]
    context.close()


def test_a_client_never_sees_another_tenants_jobs(browser: Browser, fleet: Fleet) -> None:
    alices = fleet.client.submit_txt2img(
        {"prompt": "alice's secret garden", "model": "demo", "width": 64, "height": 64, "steps": 2}
    )
    fleet.wait_final(alices.id)
    context, page = logged_in(browser, fleet, fleet.keys.bob)
    page.wait_for_selector(".stat")
    expect(page.locator(".page-head")).to_contain_text("Your jobs")
    expect(page.locator("a[data-page=workers]")).to_be_hidden()

    page.click("a[data-page=jobs]")
    page.wait_for_selector("#filter-status")
    expect(page.locator("main")).not_to_contain_text("secret garden")
    expect(page.locator(f'a[href="#/job/{alices.id}"]')).to_have_count(0)

    page.click("a[data-page=gallery]")
    expect(page.locator(".gallery")).to_contain_text("No images yet")

    page.goto(f"{fleet.url}/ui#/job/{alices.id}")
    expect(page.locator(".error-box")).to_contain_text(f"no job '{alices.id}'")
    expect(page.locator("main")).not_to_contain_text("secret garden")
    response = page.request.get(f"{fleet.url}/v1/jobs/{alices.id}/outputs/0")
    assert response.status == 404
    context.close()


def test_an_admin_sees_the_fleet_and_releases_a_quarantined_node(
    browser: Browser, fleet: Fleet, admin_key: str
) -> None:
    # Its own job, so that the test reads the same alone as after the others: alice's row in
    # "Latest jobs" and the demo model resident on the real worker.
    alices = fleet.client.submit_txt2img(
        {"prompt": "a harbour", "model": "demo", "width": 64, "height": 64, "steps": 2}
    )
    fleet.wait_final(alices.id)
    quarantine_a_flaky_node(fleet, "flaky-node")
    context, page = logged_in(browser, fleet, admin_key)
    page.wait_for_selector(".chips")
    expect(page.locator(".page-head")).to_contain_text("The whole fleet")
    expect(page.locator("main")).to_contain_text("Latest jobs, all tenants")
    expect(page.locator("main")).to_contain_text("alice")
    expect(page.locator(".stat", has_text="Cost / hour")).to_contain_text("$")
    shot(page, "overview-admin")

    # Alice's job, opened from the fleet's list: the whole page, read-only.
    page.click(f'a[href="#/job/{alices.id}?tenant=alice"]')
    expect(page.locator(".page-head h1")).to_contain_text(alices.id)
    expect(page.locator("#tenant-note")).to_contain_text("alice's job")
    expect(page.locator(".live .badge-succeeded")).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.querySelector('.output img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    expect(page.locator(".kv").first).to_contain_text("a harbour")
    expect(page.locator(".table .badge-succeeded").first).to_be_visible()  # the attempt
    expect(page.locator(".page-head button", has_text="Cancel")).to_have_count(0)
    shot(page, "job-as-admin")

    page.click("a[data-page=workers]")
    row = page.locator('tr[data-node-row="flaky-node"]')
    expect(row.locator(".badge-quarantined")).to_be_visible()
    expect(page.locator(".table").first).to_contain_text("demo@1")  # resident on the real worker
    shot(page, "workers")
    row.locator("button", has_text="Release").click()
    expect(row.locator(".badge-active")).to_be_visible()
    expect(row.locator("button")).to_have_count(0)
    shot(page, "workers-released")
    nodes = httpx.get(
        f"{fleet.url}/v1/admin/nodes", headers={"Authorization": f"Bearer {admin_key}"}
    ).json()
    assert {n["id"]: n["status"] for n in nodes}["flaky-node"] == "active"

    page.click("a[data-page=jobs]")
    expect(page.locator(".page-head h1")).to_contain_text("Jobs, all tenants")
    expect(page.locator(f'a[data-job="{alices.id}"]')).to_be_visible()
    expect(page.locator("td.owner").first).to_be_visible()
    shot(page, "jobs-admin")
    page.locator(f'a[data-job="{alices.id}"]').click()
    expect(page.locator("#tenant-note")).to_be_visible()  # alice's job, read-only
    context.close()


def test_a_client_submits_img2img_from_the_form_with_an_uploaded_init_image(
    browser: Browser, fleet: Fleet
) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buffer, format="PNG")
    context, page = logged_in(browser, fleet, fleet.keys.alice)
    page.click("a[data-page=submit]")
    page.select_option("#submit-kind", "img2img")
    expect(page.locator("#submit-size")).to_be_hidden()
    expect(page.locator("#submit-mask-field")).to_be_hidden()
    page.set_input_files(
        "#submit-init",
        files=[{"name": "init.png", "mimeType": "image/png", "buffer": buffer.getvalue()}],
    )
    page.fill("#submit-prompt", "a fox in the snow")
    page.fill("#submit-strength", "0.5")
    page.fill("#submit-steps", "4")
    page.fill("#submit-seed", "3")
    page.click("#submit-button")
    job_id = page.locator("#submit-job-link").inner_text()
    expect(page.locator('#submit-result .bar[aria-valuenow="100"]')).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.querySelector('#submit-result .output img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    shot(page, "submit-img2img")
    job = fleet.client.get(job_id)
    assert (job.kind, job.status) == ("img2img", JobStatus.succeeded)
    assert job.params["strength"] == 0.5 and job.params["init_image"]
    assert (job.outputs[0].width, job.outputs[0].height) == (64, 64)  # the init image's size
    context.close()


def test_a_training_jobs_page_draws_its_loss_curve(browser: Browser, fleet: Fleet) -> None:
    dataset = fleet.client.upload_input(dataset_zip(), "application/zip")
    params = train_params(dataset=dataset.id, steps=6, checkpoint_every=2, keep_last=2)
    job = fleet.client.submit("train_lora", params)
    context, page = logged_in(browser, fleet, fleet.keys.alice)
    page.goto(f"{fleet.url}/ui#/job/{job.id}")
    expect(page.locator(".live .badge-succeeded")).to_be_visible()
    expect(page.locator("#training .stat", has_text="Steps")).to_contain_text("6 / 6")
    expect(page.locator("#loss-chart path.line")).to_have_count(1)
    assert page.locator("#loss-chart circle.dot").count() >= 1
    expect(page.locator("#training .stat", has_text="Cost")).to_contain_text("$")
    expect(page.locator("#training")).to_contain_text("Registered as")
    expect(page.locator(".output-file a")).to_contain_text("download")  # the LoRA, no <img>
    stray = "[...document.querySelector('main').childNodes].filter(n => n.nodeType === 3)"
    assert page.evaluate(f"{stray}.map(n => n.textContent.trim()).join('')") == ""
    shot(page, "job-training")
    context.close()


def quarantine_a_flaky_node(fleet: Fleet, node_id: str) -> None:
    """A node that claims an `echo` job (which the real worker does not serve) and fails it,
    through the worker protocol: with one failure allowed, that quarantines it."""
    job = fleet.client.http.post(
        "/v1/jobs", json={"kind": "echo", "params": {"text": "for the flaky node"}}
    )
    job.raise_for_status()
    worker = httpx.Client(
        base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.keys.worker}"}, timeout=30
    )
    with worker:
        claim = worker.post(
            "/v1/worker/claim",
            json={
                "worker_id": f"{node_id}-w",
                "node_id": node_id,
                "capabilities": {"kinds": ["echo"]},
                "wait_seconds": 5,
            },
        ).json()
        attempt = claim["assignment"]["attempt_id"]
        failed = worker.post(
            f"/v1/worker/attempts/{attempt}/fail",
            json={"code": "worker_error", "message": "CUDA error: an illegal memory access"},
        )
        failed.raise_for_status()
    fleet.client.http.post(f"/v1/jobs/{job.json()['id']}/cancel").raise_for_status()
