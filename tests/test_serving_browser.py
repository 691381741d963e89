"""The chat page of `llmfs serve`, driven in a real headless Chromium (Playwright + Debian's chromium).

Skipped, with the reason, where no browser is installed; CI installs Debian's `chromium`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

CHROMIUM = os.environ.get("LLMFS_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).exists():
    if os.environ.get("LLMFS_REQUIRE_BROWSER"):     # .ci/run sets it: there the browser test must run
        raise RuntimeError(f"LLMFS_REQUIRE_BROWSER is set but there is no Chromium at {CHROMIUM}")
    pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium) or set LLMFS_CHROMIUM",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

import torch  # noqa: E402

from llm_from_scratch.model import GPTConfig, GPTModel  # noqa: E402
from llm_from_scratch.serving.app import BackgroundServer, ServedModel, create_app  # noqa: E402
from llm_from_scratch.serving.engine import Engine  # noqa: E402
from llm_from_scratch.tokenizers import get_tokenizer  # noqa: E402

# As the machine notes say: no GPU, no QUIC, and no background connections (the network is closed).
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000


class SlowModel(torch.nn.Module):
    """A tiny random GPT that takes 20 ms per step, so that the answer visibly streams in."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = GPTModel(GPTConfig(vocab_size=50257, context_length=256, emb_dim=32, n_heads=2, n_layers=2,
                                        drop_rate=0.0)).eval()
        self.cfg = self.inner.cfg

    def new_kv_cache(self, batch_size, max_len=None):
        return self.inner.new_kv_cache(batch_size, max_len)

    def forward(self, idx, kv_cache=None, only_last=False):
        time.sleep(0.02)
        return self.inner(idx, kv_cache=kv_cache, only_last=only_last)


@pytest.fixture
def server():
    engine = Engine(SlowModel(), get_tokenizer("gpt2"), max_batch_size=4)
    served = ServedModel(engine, ["tiny-chat"], None, max_tokens_limit=64)
    with BackgroundServer(create_app(served)) as background:
        background.engine = engine
        yield background


def test_chat_page_in_headless_chromium(server, tmp_path):
    requests, bodies = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                             timeout=TIMEOUT_MS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 700})
            page.set_default_timeout(TIMEOUT_MS)
            page.on("request", lambda r: requests.append(r.url))
            page.on("request", lambda r: bodies.append(json.loads(r.post_data))
                    if r.url.endswith("/v1/chat/completions") else None)
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model-name').textContent === 'tiny-chat'")

            # first turn: the reply streams in (seen while it is still growing), then completes
            page.fill("#temperature", "0")
            page.fill("#max-tokens", "24")
            page.fill("#prompt", "Hello there!")
            page.press("#prompt", "Enter")
            partial = page.wait_for_function("""() => {
                const m = document.querySelector('.message.assistant.streaming .text');
                return m && m.textContent.length > 0 && m.textContent; }""", polling=5).json_value()
            page.wait_for_selector(".message.assistant[data-done='true']")
            first = page.locator(".message.assistant").nth(0)
            final = first.locator(".text").inner_text()
            assert final.startswith(partial) and len(final) > len(partial)
            assert int(first.get_attribute("data-chunks")) > 1
            assert "tokens" in first.locator(".meta").inner_text()

            # second turn: the whole conversation goes to the server
            page.fill("#prompt", "And a second question?")
            page.click("#send")
            page.wait_for_function("document.querySelectorAll(\".message.assistant[data-done='true']\").length === 2")
            assert [m["role"] for m in bodies[1]["messages"]] == ["user", "assistant", "user"]
            assert bodies[1]["messages"][1]["content"] == final
            assert bodies[0]["temperature"] == 0 and bodies[0]["max_tokens"] == 24 and bodies[0]["stream"] is True

            # the stop button ends a long answer early and frees the server's slot
            page.fill("#max-tokens", "64")
            page.fill("#prompt", "Now a long one")
            page.click("#send")
            page.wait_for_function("() => Number(document.querySelectorAll('.message.assistant')[2]"
                                   "?.dataset.chunks || 0) >= 2")
            page.click("#stop")
            page.wait_for_selector(".message.assistant[data-done='stopped']")
            deadline = time.monotonic() + 10
            while server.engine.stats["cancelled"] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.engine.stats["cancelled"] == 1

            shot = tmp_path / "chat.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("LLMFS_SCREENSHOT"):
                Path(os.environ["LLMFS_SCREENSHOT"]).write_bytes(shot.read_bytes())
        finally:
            browser.close()
    assert requests and all(url.startswith(server.url) for url in requests), "the page must not load anything " \
        f"from elsewhere: {[u for u in requests if not u.startswith(server.url)]}"
