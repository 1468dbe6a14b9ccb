"""The llama.cpp end over a real socket (uvicorn in a thread, a scripted llama behind the app): a client that
closes its stream frees the model at once, so the next request's latency is unchanged."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from kit.recipe import load_recipe
from kit.serve import create_app

PIECES = 400  # a long streamed answer: a client closing it after a few chunks leaves most of it ungenerated


class SlowLlama:
    """Stands in for llama_cpp.Llama: streams PIECES pieces, 10 ms apart, and counts what it was asked for."""

    def __init__(self):
        self.started = self.finished = self.abandoned = 0

    def create_completion(self, prompt, stream=False, **params):
        self.started += 1
        if not stream:
            self.finished += 1
            return {"choices": [{"text": "Thinking.\n</think>\n\nNaloxone.", "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}
        return self._pieces()

    def _pieces(self):
        try:
            for i in range(PIECES):
                time.sleep(0.01)
                yield {"choices": [{"text": "word ", "finish_reason": "length" if i == PIECES - 1 else None}]}
            self.finished += 1
        except GeneratorExit:
            self.abandoned += 1
            raise


@pytest.fixture(scope="module")
def live():
    import uvicorn
    from transformers import AutoTokenizer

    from kit.base_model import ensure_tiny
    from kit.children import free_port

    recipe = load_recipe("tiny")
    llm = SlowLlama()
    app = create_app(recipe, llm, AutoTokenizer.from_pretrained(ensure_tiny(recipe.model.tiny)), 4096, "scripted")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", llm
    server.should_exit = True
    thread.join(timeout=10)


def plain(url: str, timeout: float = 10) -> float:
    t = time.perf_counter()
    r = httpx.post(f"{url}/v1/chat/completions", timeout=timeout,
                   json={"messages": [{"role": "user", "content": "Antidote?"}], "max_tokens": 8})
    assert r.status_code == 200, r.text
    return time.perf_counter() - t


def test_streams_closed_by_their_clients_leave_the_next_request_unchanged(live):
    url, llm = live
    before = min(plain(url) for _ in range(3))
    for _ in range(4):
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=10,
                          json={"messages": [{"role": "user", "content": "Antidote?"}], "max_tokens": 1000,
                                "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]  # a few chunks, then the client goes away (a Stop button)
            assert any(line.startswith("data: ") for line in got)
    after = [plain(url) for _ in range(3)]
    # the model was freed at once: a plain request does not wait for the abandoned streams' 4 s of generation
    assert max(after) < before + 1.5, (before, after)
    deadline = time.time() + 5
    while llm.abandoned < 4 and time.time() < deadline:
        time.sleep(0.05)
    assert llm.abandoned == 4 and llm.finished == 6, vars(llm)
