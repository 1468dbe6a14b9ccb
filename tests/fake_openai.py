"""A scripted OpenAI-compatible chat server on 127.0.0.1 for judge tests and benchmarks.

The behaviour for a request is chosen by a tag in the question text (`[[tag]]`), so one server
serves every case; it records each request body and the most requests ever in flight.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verdict_json(verdict="correct", score=1.0):
    return json.dumps({"verdict": verdict, "score": score, "rationale": "scripted"})


class _Server(ThreadingHTTPServer):
    # http.server's listen backlog is 5: more simultaneous connects than that are dropped and retried by
    # TCP after about a second, which a benchmark at concurrency 16 measures instead of the judge.
    request_queue_size = 128


class FakeOpenAI:
    def __init__(self, latency_s: float = 0.0, hang_s: float = 3.0, default_tag: str = "correct"):
        """`default_tag`: the behaviour for a request whose question has no tag ("correct": a gullible judge,
        "incorrect": a strict one, "flaky": a 500 on the first request, then gullible)."""
        self.latency_s, self.hang_s, self.default_tag = latency_s, hang_s, default_tag
        self.bodies: list[dict] = []
        self.seen = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real API servers do: no new connection per request
            disable_nagle_algorithm = True  # else headers and body, written apart, wait ~40 ms for a delayed ACK

            def log_message(self, *args):
                pass

            def do_GET(self):  # counters, for a benchmark that runs the server in another process
                server.send(self, 200, {"requests": server.requests, "max_in_flight": server.max_in_flight})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.bodies.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    server.respond(self, body)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def requests(self) -> int:
        return len(self.bodies)

    def respond(self, h, body):
        text = body["messages"][-1]["content"]
        tag = (re.search(r"\[\[(\w+)\]\]", text) or [None, self.default_tag])[1]
        with self._lock:
            self.seen[tag] += 1
            n = self.seen[tag]
        if self.latency_s:
            time.sleep(self.latency_s)
        if tag == "ratelimited" and n == 1:
            return self.send(h, 429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
        if tag == "flaky" and n == 1:
            return self.send(h, 500, {"error": {"message": "boom"}})
        if tag == "unauthorized":
            return self.send(h, 401, {"error": {"message": "Authentication Fails (no such user)", "type": "authentication_error"}})
        if tag == "forbidden":
            return self.send(h, 403, {"error": {"message": "model not allowed", "type": "permission_error"}})
        if tag == "down":
            return self.send(h, 503, {"error": {"message": "unavailable"}})
        if tag == "hang":
            time.sleep(self.hang_s)
        if '"criteria": [' in text:  # a rubric case: each criterion met when a word of it (5+ letters) is in the answer
            case = json.loads(text.split("\n", 1)[1].rsplit("\n\nReply", 1)[0])
            answer = case["candidate_answer"].lower()
            graded = [{"id": c["id"], "explanation": "scripted",
                       "criteria_met": any(w in answer for w in re.findall(r"[a-z]{5,}", c["criterion"].lower()))}
                      for c in case["criteria"]]
            content = json.dumps({"criteria": graded})
            return self.send(h, 200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 60 + 20 * len(graded), "completion_tokens": 15 * len(graded),
                          "total_tokens": 60 + 35 * len(graded)}})
        content = {
            "incorrect": verdict_json("incorrect", 0.0),
            "partial": verdict_json("partially_correct", 0.6),
            "fenced": "Here is my judgement.\n```json\n" + verdict_json("correct", 1.0) + "\n```\nThanks.",
            "prose": "The candidate seems right to me.",
        }.get(tag, verdict_json("correct", 1.0))
        self.send(h, 200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        })

    @staticmethod
    def send(h, status, payload, headers=None):
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a time-out test)


if __name__ == "__main__":  # the server alone, in its own process: python tests/fake_openai.py [latency_s]
    import sys

    with FakeOpenAI(latency_s=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as fake:
        print(fake.url, flush=True)
        fake.thread.join()
