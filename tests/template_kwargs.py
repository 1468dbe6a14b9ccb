"""One table of `chat_template_kwargs` and what `kit serve` answers, run against both of its ends: the
same request gets the same status, and the same header naming what the model's template does not read."""

TABLE = [  # (chat_template_kwargs, status, x-kit-ignored-template-kwargs on a Qwen3.5 template)
    ({}, 200, None),
    ({"enable_thinking": False}, 200, None),
    ({"preserve_thinking": True}, 200, "preserve_thinking"),  # Qwen3.5's template has no such switch
    ({"enable_thinking": True, "preserve_thinking": True, "custom_flag": 1}, 200, "custom_flag, preserve_thinking"),
    ({"enable_thinking": "yes"}, 400, "chat_template_kwargs.enable_thinking must be true or false"),
    ({"preserve_thinking": 1}, 400, "chat_template_kwargs.preserve_thinking must be true or false"),
    ("on", 400, "'chat_template_kwargs' must be an object"),
]


def qwen36(table=TABLE) -> list:
    """The same table for Qwen3.6's template, which reads `preserve_thinking`."""
    def without(header):
        rest = [k for k in (header or "").split(", ") if k and k != "preserve_thinking"]
        return ", ".join(rest) or None
    return [(k, s, without(h) if s == 200 else h) for k, s, h in table]


def check_table(http, url: str, model: str, table=TABLE) -> None:
    """POST each row to `url` (…/chat/completions) through `http` (an httpx-compatible client)."""
    for kwargs, status, expected in table:
        body = {"model": model, "messages": [{"role": "user", "content": "Antidote for opioid overdose?"}],
                "max_tokens": 4, "chat_template_kwargs": kwargs}
        r = http.post(url, json=body)
        assert r.status_code == status, (kwargs, r.status_code, r.text[:300])
        if status == 200:
            assert r.headers.get("x-kit-ignored-template-kwargs") == expected, (kwargs, dict(r.headers))
        else:
            assert expected in r.json()["error"]["message"], (kwargs, r.text[:300])
