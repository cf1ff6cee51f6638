"""The web page in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`) drives the page served
by the real app on uvicorn over a small index of generated scenes and captions, encoded by the built-in model.

Skipped only when the browser or its driver is absent (`.ci/run` installs them). Screenshots are test artefacts:
written to the test's tmp folder, and copied to $UNIRETRIEVE_ARTIFACTS when it is set.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve_helpers import add_shards, build_flat, encode_folder, make_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
    ),
]
SCENES = 16
CAPTIONS = 8
HOSTILE = {
    "text": '<img src=x onerror="window.pwned=1"> <b>bold?</b> & co',
    "scene": "<script>window.pwned=2</script>",
}
"""A text item whose text and metadata are markup: the page must show it as text and run none of it."""
WAIT_S = 30.0
"""Generous: the machine running the suite may be busy; each wait returns as soon as the page is ready."""


@pytest.fixture(scope="module")
def corpus_index(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An index of SCENES generated images (an image folder, so the server can show them) plus CAPTIONS of their
    long captions as text items with metadata (a second shard directory, added the way `index add` adds)."""
    from uniretrieve.models.encoder import Encoder
    from uniretrieve.scenes.config import GenerateConfig
    from uniretrieve.scenes.generate import generate

    root = tmp_path_factory.mktemp("serve-page")
    generate(
        GenerateConfig(
            out=str(root / "corpus"), seed=7, train_scenes=0, test_scenes=SCENES, layouts=("urban1k",)
        )
    )
    images = root / "corpus" / "urban1k" / "image"
    captions = root / "captions.jsonl"
    with captions.open("w", encoding="utf-8") as f:
        for p in sorted((root / "corpus" / "urban1k" / "caption").glob("*.txt"))[:CAPTIONS]:
            text = p.read_text(encoding="utf-8")
            f.write(json.dumps({"text": text, "scene": p.stem, "words": len(text.split())}) + "\n")
        f.write(json.dumps(HOSTILE) + "\n")
    encoder = Encoder.load("unime-tiny", device="cpu")
    encode_folder(images, root / "emb-images", Path("unime-tiny"), encoder)
    encode_folder(captions, root / "emb-captions", Path("unime-tiny"), encoder)
    index = build_flat(root / "emb-images", root / "index")
    add_shards(index, root / "emb-captions")
    return {"index": index, "images": images, "encoder": encoder, "root": root}


class LiveServer:
    """The app on uvicorn in a thread, on a loopback socket bound before the server starts (no port race)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(WAIT_S * 20)):
            if self.server.started or not self.thread.is_alive():
                break
            deadline.wait(0.05)
        assert self.server.started, "uvicorn did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=WAIT_S)
        self.sock.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def save_screenshot(driver: Any, folder: Path, name: str) -> Path:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    ActionChains(driver).move_to_element(driver.find_element(By.CSS_SELECTOR, ".brand")).perform()  # no hover
    path = folder / name
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    assert path.stat().st_size > 10_000
    artefacts = os.environ.get("UNIRETRIEVE_ARTIFACTS")
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(artefacts) / name)
    return path


def waiter(driver: Any) -> Callable[[Callable[[Any], Any], str], Any]:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the page re-renders its header and grid: an element read while it is replaced is simply read again
    ignored = (NoSuchElementException, StaleElementReferenceException)

    def wait(condition: Callable[[Any], Any], what: str) -> Any:
        return WebDriverWait(driver, WAIT_S, ignored_exceptions=ignored).until(
            condition, message=f"timed out waiting for {what}"
        )

    return wait


def cards(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#results li.card")


def shown_ids(driver: Any) -> list[int]:
    return [int(c.get_attribute("data-internal-id")) for c in cards(driver)]


def first_id(driver: Any) -> int | None:
    ids = shown_ids(driver)
    return ids[0] if ids else None


def test_page_searches_by_text_image_and_more_like_this(corpus_index, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    app = make_app(corpus_index["index"], corpus_index["encoder"])
    wait = waiter(browser)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=WAIT_S) as api:
        browser.get_log("browser")  # drop what earlier tests logged
        browser.get(live.url + "/")
        info = wait(lambda d: d.find_element(By.ID, "info").text, "the index info in the header")
        assert "unime-tiny" in info and str(SCENES + CAPTIONS + 1) in info

        # a text query, submitted with Enter: the page shows exactly the server's ranking
        query = "a large dotted blue star"
        browser.find_element(By.ID, "q").send_keys(query, Keys.ENTER)
        wait(lambda d: len(cards(d)) == 20, "20 result cards")
        expected = api.post("/search", json={"text": query, "k": 20}).json()["hits"]
        assert shown_ids(browser) == [h["internal_id"] for h in expected]
        ranks = [c.get_attribute("data-rank") for c in cards(browser)]
        assert ranks == [str(r) for r in range(1, 21)]
        stats = browser.find_element(By.ID, "stats").text
        assert "ms server" in stats and "ms round trip" in stats, stats
        # image hits show their thumbnails, text hits their text
        wait(
            lambda d: (
                d.execute_script(
                    "return [...document.querySelectorAll('#results img')].filter(i => i.naturalWidth > 0).length"
                )
                >= 5
            ),
            "thumbnails to load",
        )
        snippets = {
            int(c.get_attribute("data-internal-id")): c.find_element(
                By.CSS_SELECTOR, ".snippet"
            ).get_attribute("textContent")
            for c in cards(browser)
            if c.find_elements(By.CSS_SELECTOR, ".snippet")
        }
        assert snippets and snippets == {
            h["internal_id"]: h["text"] for h in expected if h["modality"] == "text"
        }

        # the CLI's weighted syntax, typed without shell quotes: the page shows the terms and sends them quoted
        q = browser.find_element(By.ID, "q")
        q.clear()
        q.send_keys("2:a large dotted blue star + a red circle - a green square")
        terms = browser.find_element(By.ID, "hint-terms")
        assert [t.text for t in terms.find_elements(By.CSS_SELECTOR, ".term")] == [
            "+ 2 × a large dotted blue star",
            "+ 1 × a red circle",
            "− 1 × a green square",
        ]
        q.send_keys(Keys.ENTER)
        wait(lambda d: "2:a large" in d.find_element(By.ID, "stats").text, "the weighted query's results")
        weighted = '"2:a large dotted blue star" + "a red circle" - "a green square"'
        expected = api.post("/search", json={"query": weighted, "k": 20}).json()["hits"]
        assert shown_ids(browser) == [h["internal_id"] for h in expected]
        assert shown_ids(browser) != [
            h["internal_id"] for h in api.post("/search", json={"text": query, "k": 20}).json()["hits"]
        ]

        # an uploaded image (one of the corpus's own files) finds itself first
        image = sorted(corpus_index["images"].glob("*.jpg"))[5]
        own = api.get("/items", params={"id": image.name}).json()["internal_id"]
        browser.find_element(By.ID, "file").send_keys(str(image))
        wait(lambda d: "for image" in d.find_element(By.ID, "stats").text, "the image query's results")
        assert first_id(browser) == own
        assert browser.find_element(By.ID, "image-chip").is_displayed()

        # "More like this" on the fourth hit: that item comes back first, marked as the source
        fourth = cards(browser)[3]
        target = int(fourth.get_attribute("data-internal-id"))
        fourth.find_element(By.CSS_SELECTOR, "button.more").click()
        wait(lambda d: "items like" in d.find_element(By.ID, "stats").text, "the more-like-this results")
        assert first_id(browser) == target
        assert "is-source" in cards(browser)[0].get_attribute("class")
        assert browser.find_element(By.ID, "like-chip").is_displayed()
        assert not browser.find_element(By.ID, "image-chip").is_displayed()
        assert "like=" in browser.current_url  # the search is in the address, so it can be shared or reloaded

        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        save_screenshot(browser, tmp_path, "serve_page.png")


def test_page_asks_for_the_api_key_and_shows_the_servers_errors(
    corpus_index, browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    key = "k3y-for-the-browser-test"
    app = make_app(corpus_index["index"], corpus_index["encoder"], api_key=key)
    wait = waiter(browser)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=WAIT_S) as api:
        browser.get(live.url + "/")
        dialog = browser.find_element(By.ID, "key-dialog")
        wait(lambda d: dialog.get_attribute("open") is not None, "the API key dialog")
        key_input = browser.find_element(By.ID, "key-input")
        key_input.send_keys("wrong", Keys.ENTER)
        wait(lambda d: "refused" in d.find_element(By.ID, "key-message").text, "the refused-key message")
        key_input.clear()
        key_input.send_keys(key, Keys.ENTER)
        wait(lambda d: "unime-tiny" in d.find_element(By.ID, "info").text, "the index info after the key")
        assert dialog.get_attribute("open") is None
        assert browser.execute_script("return localStorage.getItem('uniretrieve.apiKey')") == key

        # the key also fetches the thumbnails (an <img src> cannot send it; the page fetches them itself)
        browser.find_element(By.ID, "q").send_keys("a small red circle", Keys.ENTER)
        wait(lambda d: len(cards(d)) == 20, "20 result cards")
        wait(
            lambda d: d.execute_script(
                "return [...document.querySelectorAll('#results img')].some(i => i.naturalWidth > 0)"
            ),
            "a thumbnail fetched with the key",
        )

        # a bad filter: the page shows the server's own one-sentence message
        bad = {"text": "a small red circle", "where": "width >", "k": 20}
        res = api.post("/search", json=bad, headers={"X-API-Key": key})
        assert res.status_code in (400, 422)
        message = res.json()["error"]["message"]
        browser.find_element(By.ID, "where").send_keys(bad["where"], Keys.ENTER)
        wait(lambda d: d.find_element(By.ID, "error").is_displayed(), "the error banner")
        assert browser.find_element(By.ID, "error-text").text == message
        save_screenshot(browser, tmp_path, "serve_page_error.png")


DROP_FILE = """
const [b64, name, done] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], name, { type: "image/jpeg" }));
for (const type of ["dragenter", "dragover", "drop"]) {
  document.body.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
}
done(true);
"""


def test_page_escapes_markup_takes_dropped_images_and_follows_a_live_index_add(
    corpus_index, browser, tmp_path: Path
) -> None:
    import base64

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from tests.serve_helpers import write_images

    index = tmp_path / "index"  # a copy: the add below must not change the other tests' index
    shutil.copytree(corpus_index["index"], index)
    app = make_app(index, corpus_index["encoder"], watch_interval=0.2)
    wait = waiter(browser)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=WAIT_S) as api:
        browser.get_log("browser")  # drop what earlier tests logged
        browser.get(live.url + "/")
        wait(lambda d: "unime-tiny" in d.find_element(By.ID, "info").text, "the index info")

        # markup in an item's text and metadata is shown as text, and none of it runs
        browser.find_element(By.ID, "q").send_keys(HOSTILE["text"], Keys.ENTER)
        wait(lambda d: len(cards(d)) == 20, "20 result cards")
        top = cards(browser)[0]
        assert top.find_element(By.CSS_SELECTOR, ".snippet").text == HOSTILE["text"]
        top.find_element(By.CSS_SELECTOR, ".meta summary").click()
        assert HOSTILE["scene"] in top.find_element(By.CSS_SELECTOR, ".meta dl").text
        assert not browser.find_elements(
            By.CSS_SELECTOR, "#results b, #results script, #results img[src='x']"
        )
        assert browser.execute_script("return window.pwned") is None

        # instruction, filter and k reach the server as typed; changing k searches again
        instruction = "Find an image that matches the given caption."
        browser.find_element(By.ID, "instruction").send_keys(instruction)
        browser.find_element(By.ID, "where").send_keys("modality = 'image'")
        q = browser.find_element(By.ID, "q")
        q.clear()
        q.send_keys("a small plain pink star", Keys.ENTER)
        wait(lambda d: "pink star" in d.find_element(By.ID, "stats").text, "the filtered results")
        Select(browser.find_element(By.ID, "k")).select_by_visible_text("10")
        wait(lambda d: len(cards(d)) == 10, "10 result cards")
        body = {
            "text": "a small plain pink star",
            "instruction": instruction,
            "where": "modality = 'image'",
            "k": 10,
        }
        expected = api.post("/search", json=body).json()["hits"]
        assert shown_ids(browser) == [h["internal_id"] for h in expected]
        assert {h["modality"] for h in expected} == {"image"}
        for field in ("instruction", "where"):
            browser.find_element(By.ID, field).clear()

        # an image file dropped on the page searches with it
        image = sorted(corpus_index["images"].glob("*.jpg"))[9]
        own = api.get("/items", params={"id": image.name}).json()["internal_id"]
        browser.execute_async_script(DROP_FILE, base64.b64encode(image.read_bytes()).decode(), image.name)
        wait(lambda d: "for image" in d.find_element(By.ID, "stats").text, "the dropped image's results")
        assert first_id(browser) == own
        assert browser.find_element(By.ID, "image-name").text == image.name

        # `index add` while the page is open: the next search sees the new version and the header follows it
        before = api.get("/health").json()["version"]
        new = write_images(tmp_path / "new-images", ["fresh/one.png", "fresh/two.png"], seed=50)
        add_shards(
            index, encode_folder(new, tmp_path / "emb-new", Path("unime-tiny"), corpus_index["encoder"])
        )
        wait(
            lambda d: api.get("/health").json()["version"] != before, "the server to swap the new version in"
        )
        browser.find_element(By.ID, "image-clear").click()
        browser.find_element(By.ID, "q").send_keys("a small plain pink star", Keys.ENTER)
        size = str(SCENES + CAPTIONS + 1 + 2)
        wait(
            lambda d: d.find_element(By.CSS_SELECTOR, "[data-info=items] dd").text == size,
            "the header's new size",
        )
        assert "changed" in browser.find_element(By.CSS_SELECTOR, "[data-info=version]").get_attribute(
            "class"
        )
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
