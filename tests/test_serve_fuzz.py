"""schemathesis against the llama.cpp end's OpenAPI schema (FastAPI writes it; the chat route declares what it
reads of an OpenAI request): generated requests, valid and not (schemathesis' coverage and fuzzing phases),
never get a 500, and every error is the OpenAI shape the openai client reads. A scripted model behind the app;
the chat template and the parser are real."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from kit.recipe import load_recipe
from kit.serve import create_app


class QuickLlama:
    def create_completion(self, prompt, stream=False, **params):
        text = "Weighing it.\n</think>\n\nNaloxone."
        if not stream:
            return {"choices": [{"text": text, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}
        return iter([{"choices": [{"text": text, "finish_reason": "stop"}]}])


def app():
    """Built at collection, as schemathesis reads the schema then (its pytest plugin cannot take it from a
    fixture under this pytest); the tiny model is built once and cached, so this costs a second or two."""
    from transformers import AutoTokenizer

    from kit.base_model import ensure_tiny

    recipe = load_recipe("tiny")
    return create_app(recipe, QuickLlama(), AutoTokenizer.from_pretrained(ensure_tiny(recipe.model.tiny)), 4096,
                      "scripted")


schema = schemathesis.openapi.from_asgi("/openapi.json", app())


@schemathesis.check
def openai_shaped_errors(ctx, response, case):
    """An error answers in the shape the openai client reads its message from."""
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str), body


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_generated_requests_get_no_500_and_only_openai_shaped_errors(case):
    response = case.call()
    case.validate_response(response, checks=(schemathesis.checks.not_a_server_error, openai_shaped_errors))
