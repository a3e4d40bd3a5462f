"""The demo's application side: a service making real openai and anthropic SDK calls.

Run by ``costspan demo`` as ``opentelemetry-instrument python -m costspan.processor._demo.workload
PROFILE CALLS``, so costspan's instrumentation is loaded exactly as in a user's app. It talks to the
demo's fake provider (``COSTSPAN_DEMO_PROVIDER_URL``) and prints one JSON line per call
(``{"tenant", "model", "outcome"}``) for the demo to show progress.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import anthropic
import openai
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from costspan.instrumentation import BudgetExceededError, attribute

__all__ = ["PROFILES", "main"]


@dataclass(frozen=True, slots=True)
class Call:
    api: str  # "openai" | "anthropic"
    model: str
    max_tokens: int
    stream: bool


@dataclass(frozen=True, slots=True)
class Profile:
    tenant: str
    workflow: str
    users: tuple[str, ...]
    calls: tuple[Call, ...]


PROFILES: dict[str, Profile] = {
    "support-bot": Profile(
        "acme",
        "ticket-triage",
        ("agent-ana", "agent-bo", "agent-cy"),
        (
            Call("openai", "gpt-4o-2024-08-06", 600, False),
            Call("anthropic", "claude-sonnet-4-6", 800, True),
            Call("openai", "gpt-4o-2024-08-06", 600, True),
        ),
    ),
    "code-review": Profile(
        "globex",
        "pr-review",
        ("dev-dee", "dev-eli"),
        (
            Call("openai", "o3", 4000, False),
            Call("openai", "gpt-4.1", 2000, True),
            Call("anthropic", "claude-opus-4-7", 2000, False),
        ),
    ),
    "search": Profile(
        "initech",
        "rag-answer",
        ("user-fay", "user-gus", "user-hal", "user-ivy"),
        (
            Call("openai", "gpt-4o-mini", 400, True),
            Call("anthropic", "claude-haiku-4-5", 400, False),
        ),
    ),
}

QUESTION = "Summarise the customer's last three tickets and suggest a reply in two sentences."
#: A long system prompt, really sent (about 1,600 words): the budget check counts it in the estimate.
SYSTEM_PROMPT = " ".join(
    f"Rule {i}: answer politely, cite the ticket number, and never promise a refund or a date." for i in range(100)
)


def _openai_call(client: openai.OpenAI, call: Call) -> str:
    """Make the call; return the model that answered (a budget may have degraded it)."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": QUESTION},
    ]
    if call.stream:
        answered = call.model
        stream = client.chat.completions.create(
            model=call.model, messages=messages, max_tokens=call.max_tokens, stream=True
        )
        for chunk in stream:
            answered = chunk.model or answered
        return answered
    return client.chat.completions.create(model=call.model, messages=messages, max_tokens=call.max_tokens).model


def _anthropic_call(client: anthropic.Anthropic, call: Call) -> str:
    messages: list[MessageParam] = [{"role": "user", "content": QUESTION}]
    if call.stream:
        with client.messages.stream(
            model=call.model, max_tokens=call.max_tokens, system=SYSTEM_PROMPT, messages=messages
        ) as stream:
            for _ in stream.text_stream:
                pass
            return str(stream.get_final_message().model)
    answer = client.messages.create(
        model=call.model, max_tokens=call.max_tokens, system=SYSTEM_PROMPT, messages=messages
    )
    return str(answer.model)


def run(profile: Profile, calls: int, base_url: str, emit: Callable[[dict[str, str]], None]) -> None:
    oai = openai.OpenAI(base_url=base_url + "/v1", api_key="demo", max_retries=0)
    ant = anthropic.Anthropic(base_url=base_url, api_key="demo", max_retries=0)
    for i in range(calls):
        call = profile.calls[i % len(profile.calls)]
        user = profile.users[i % len(profile.users)]
        answered = ""
        with attribute(tenant=profile.tenant, workflow=profile.workflow, user=user, session=f"s-{i // 5}"):
            try:
                answered = _openai_call(oai, call) if call.api == "openai" else _anthropic_call(ant, call)
                outcome = "ok" if answered == call.model else "degraded"
            except BudgetExceededError:
                outcome = "blocked"
            except (openai.APIError, anthropic.APIError) as exc:
                outcome = f"error: {type(exc).__name__}: {str(exc)[:200]}"
        emit({"tenant": profile.tenant, "model": call.model, "answered": answered, "outcome": outcome})
    oai.close()
    ant.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in PROFILES or not args[1].isdigit():
        print(f"usage: demo_workload {{{'|'.join(PROFILES)}}} CALLS", file=sys.stderr)
        return 2
    base_url = os.environ["COSTSPAN_DEMO_PROVIDER_URL"]

    def emit(event: dict[str, str]) -> None:
        print(json.dumps(event), flush=True)

    run(PROFILES[args[0]], int(args[1]), base_url, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
