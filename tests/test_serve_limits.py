"""Both ends of `kit serve` over a real socket (uvicorn in a thread, a scripted llama or a scripted vLLM behind
the app): a client that closes its stream frees the model at once, so the next request's latency is unchanged;
with an API key every route but /health wants it, on both ends; a bind beyond loopback without a key is refused."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest
from openai import AuthenticationError, OpenAI

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


KEY = "sk-test-key-0123456789"


def running(app):
    """(url, stop) of `app` served by uvicorn in a thread."""
    import uvicorn

    from kit.children import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from kit.base_model import ensure_tiny

    return AutoTokenizer.from_pretrained(ensure_tiny(load_recipe("tiny").model.tiny))


@pytest.fixture(scope="module")
def live(tokenizer):
    llm = SlowLlama()
    url, stop = running(create_app(load_recipe("tiny"), llm, tokenizer, 4096, "scripted"))
    yield url, llm
    stop()


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


def test_with_a_key_the_llama_cpp_end_answers_401_without_it_and_200_with_it(tokenizer):
    url, stop = running(create_app(load_recipe("tiny"), SlowLlama(), tokenizer, 4096, "scripted", api_key=KEY))
    try:
        assert httpx.get(f"{url}/health").status_code == 200  # health stays open
        for wrong in (None, "sk-wrong"):
            r = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {wrong}"} if wrong else {})
            assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        with pytest.raises(AuthenticationError, match="API key"):
            OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0).models.list()
        client = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny"]
        reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Antidote?"}],
                                               max_tokens=8)
        assert reply.choices[0].message.content == "Naloxone."
        chunks = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Antidote?"}],
                                                max_tokens=8, stream=True)
        assert sum(1 for _ in chunks) > 3  # a stream passes through the key check
    finally:
        stop()


def test_with_a_key_the_vllm_end_s_proxy_asks_for_it_and_sends_it_on_to_vllm():
    """The proxy in front of a scripted vLLM that, like vLLM with VLLM_API_KEY, wants the key itself."""
    from fastapi.testclient import TestClient
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse

    from kit.vllm_end import preset_proxy

    seen = []

    async def chat(request):
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": {"message": "Unauthorized"}}, 401)
        return JSONResponse({"id": "x", "object": "chat.completion", "created": 0, "model": "tiny", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Naloxone."}}]})

    upstream = Starlette()
    upstream.add_route("/v1/chat/completions", chat, methods=["POST"])

    url, stop = running(upstream)
    try:
        proxy = TestClient(preset_proxy(load_recipe("tiny"), url, api_key=KEY))
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Antidote?"}]}
        r = proxy.post("/v1/chat/completions", json=body)
        assert r.status_code == 401 and seen == []  # stopped at the proxy, never forwarded
        r = proxy.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Naloxone."
        assert seen == [f"Bearer {KEY}"]
    finally:
        stop()


def test_a_bind_beyond_loopback_without_a_key_is_refused_naming_the_flag(monkeypatch, capsys):
    from kit.chat_api import KeyRequired, served_key

    monkeypatch.delenv("KIT_API_KEY", raising=False)
    assert served_key("127.0.0.1") is None
    with pytest.raises(KeyRequired, match="--api-key"):
        served_key("0.0.0.0")
    assert served_key("0.0.0.0", no_api_key=True) is None and "anyone" in capsys.readouterr().out
    monkeypatch.setenv("KIT_API_KEY", KEY)
    assert served_key("0.0.0.0") == KEY
    monkeypatch.delenv("KIT_API_KEY")
    proc = subprocess.run([sys.executable, "-m", "kit", "serve", "--recipe", "tiny", "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--api-key" in proc.stderr and "--no-api-key" in proc.stderr and "KIT_API_KEY" in proc.stderr


CHATTY = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("request line " * 5000, flush=True)  # ~65 KB a request, as vLLM's log lines add up over a run
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
print("x" * 200_000, flush=True)  # more than a pipe holds before anyone asks
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_child_server_that_writes_far_more_than_a_pipe_holds_still_answers(tmp_path):
    from kit.children import ChildServer, free_port

    port = free_port()
    with ChildServer([sys.executable, "-c", CHATTY, str(port)], f"http://127.0.0.1:{port}/health", 30) as child:
        for _ in range(10):  # ~850 KB written in all; a pipe nobody drains blocks the child at 64 KiB
            assert httpx.get(f"http://127.0.0.1:{port}/x", timeout=10).text == "ok"
        assert len(child.output(10**7)) > 800_000
        own_log = child.log
    assert not own_log.exists()  # a temporary log goes with the server
    log = tmp_path / "server.log"
    with ChildServer([sys.executable, "-c", CHATTY, str(port)], f"http://127.0.0.1:{port}/health", 30, log=log):
        httpx.get(f"http://127.0.0.1:{port}/x", timeout=10)
    assert log.stat().st_size > 200_000  # a log asked for is kept


def test_the_vllm_end_s_proxy_answers_503_while_vllm_starts_and_passes_a_closed_stream_on():
    """Before vLLM listens, every route but /health is an OpenAI-shaped 503 with Retry-After (not a 500 and a
    traceback); a client that closes its stream makes the proxy close vLLM's, so vLLM aborts the request."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse

    from kit.children import free_port
    from kit.vllm_end import preset_proxy

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there yet
    url, stop = running(preset_proxy(load_recipe("tiny"), dead))
    try:
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
            r = httpx.request(method, f"{url}{path}", json={"messages": [{"role": "user", "content": "?"}]})
            assert r.status_code == 503 and r.headers["retry-after"] and "starting" in r.json()["error"]["message"]
        assert httpx.get(f"{url}/health").status_code == 503
    finally:
        stop()

    seen = {"sent": 0, "closed": False}

    async def chat(request):
        async def events():
            try:
                for i in range(2000):
                    seen["sent"] += 1
                    yield f'data: {{"id": "x", "object": "chat.completion.chunk", "choices": [{{"index": 0, "delta": {{"content": "w{i} "}}}}]}}\n\n'
                    await asyncio.sleep(0.01)
            finally:
                seen["closed"] = True
        return StreamingResponse(events(), media_type="text/event-stream")

    upstream = Starlette()
    upstream.add_route("/v1/chat/completions", chat, methods=["POST"])
    up_url, stop_up = running(upstream)
    url, stop = running(preset_proxy(load_recipe("tiny"), up_url))
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=10,
                          json={"messages": [{"role": "user", "content": "?"}], "stream": True}) as r:
            lines = r.iter_lines()
            assert [next(lines) for _ in range(4)]
        deadline = time.time() + 5
        while not seen["closed"] and time.time() < deadline:
            time.sleep(0.05)
        assert seen["closed"] and seen["sent"] < 1000, seen  # vLLM's stream ended with the client's, not at its end
    finally:
        stop()
        stop_up()


def test_the_llama_cpp_end_turns_away_what_it_cannot_hold(tokenizer):
    """A body over the limit: 413; too many images: 400; past `max_waiting` requests waiting for the model: a 429
    with Retry-After at once (the openai client retries it); the server answers normally afterwards."""
    import concurrent.futures

    llm = SlowLlama()
    url, stop = running(create_app(load_recipe("tiny"), llm, tokenizer, 4096, "scripted", max_waiting=2,
                                   max_body_bytes=2**20))
    try:
        big = {"messages": [{"role": "user", "content": "x" * (2 * 2**20)}]}
        r = httpx.post(f"{url}/v1/chat/completions", json=big, timeout=10)
        assert r.status_code == 413 and "MiB" in r.json()["error"]["message"]

        def streamed(_):
            with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                              json={"messages": [{"role": "user", "content": "?"}], "max_tokens": 1000,
                                    "stream": True}) as r:
                if r.status_code != 200:
                    return r.status_code, r.headers.get("retry-after")
                for _ in r.iter_lines():
                    pass
                return 200, None

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(streamed, range(8)))
        assert sum(c == 429 for c, _ in codes) >= 3 and all(ra == "5" for c, ra in codes if c == 429), codes
        assert sum(c == 200 for c, _ in codes) >= 2, codes  # the line's two places at least (all may arrive first)
        assert plain(url) < 5  # and it serves as before
    finally:
        stop()


def test_bench_serve_s_load_against_the_llama_cpp_app_completes_or_429s_and_leaves_it_answering(tokenizer):
    """A short run of bench/bench_serve.py's load (32 clients, some streaming and closing early) against the app
    with a scripted model: no request errors, the line overflows into 429s, and the server answers after."""
    import asyncio
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_serve", Path(__file__).parent.parent / "bench" / "bench_serve.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    class Quick(SlowLlama):
        def _pieces(self):
            for i in range(20):
                time.sleep(0.002)
                yield {"choices": [{"text": "word ", "finish_reason": "length" if i == 19 else None}]}

    url, stop = running(create_app(load_recipe("tiny"), Quick(), tokenizer, 4096, "scripted", max_waiting=8))
    try:
        figures = asyncio.run(bench.load(f"{url}/v1", clients=32, seconds=4, model="tiny"))
        assert figures["errors"] == 0, figures["error_examples"]
        assert figures["completed"] >= 20 and figures["closed_early"] >= 1 and figures["rejected_429"] >= 1, figures
        assert bench.answers(f"{url}/v1")
    finally:
        stop()
