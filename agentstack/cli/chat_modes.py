"""`agentstack chat --mode rag|react --index NAME`: the application chat API in a terminal.

Streams the typed SSE events of ``POST /v1/chat``: sources are listed as they arrive, ReAct steps
are printed dimmed, answer tokens stream, and the conversation continues through its id.
"""

from __future__ import annotations

import sys

import typer

from agentstack.cli.client import ApiClient, ApiError, user_lines


def chat_app_api(client: ApiClient, *, mode: str, index: str | None, temperature: float, max_tokens: int) -> None:
    from rich.console import Console

    err = Console(stderr=True)
    conversation: str | None = None
    typer.echo(f"chatting in {mode} mode{f' over index {index}' if index else ''} at {client.url} (Ctrl-D to quit)")
    for line in user_lines():
        payload = {"message": line, "mode": mode, "index": index, "conversation_id": conversation, "stream": True,
                   "params": {"temperature": temperature, "max_tokens": max_tokens}}
        sources: list[dict] = []
        grounding: dict = {}
        started = False
        try:
            for event in client.stream_sse("/v1/chat", {k: v for k, v in payload.items() if v is not None}):
                kind = event.pop("_event", None)
                if kind == "source":
                    sources.append(event)
                elif kind == "step":
                    err.print(f"[dim]  step {event['n']}: {event['action']}({event['action_input'][:60]}) → "
                              f"{(event.get('observation') or event.get('error') or '')[:80]}[/dim]")
                elif kind == "token":
                    if not started:
                        sys.stdout.write("bot> ")
                        started = True
                    sys.stdout.write(event["text"])
                    sys.stdout.flush()
                elif kind == "done":
                    conversation = event["conversation_id"]
                    grounding = event.get("grounding") or {}
                elif kind == "error":
                    raise ApiError(event["error"].get("status", 500), event["error"]["message"])
        except ApiError as exc:
            sys.stdout.write("\n")
            typer.echo(f"error: {exc}", err=True)
            if exc.status in (0, 401, 403):
                raise typer.Exit(1) from None
            continue
        sys.stdout.write("\n")
        for s in sources:
            err.print(f"[dim]  [{s['n']}] {s['title'] or s['source']} (chunk {s['chunk_id']}, score {s['score']:.3f})"
                      "[/dim]")
        if grounding.get("decision") not in (None, "unchecked"):
            claims = grounding.get("claims") or []
            err.print(f"[dim]  grounding: {grounding['decision']} ({sum(1 for c in claims if c.get('supported'))} of "
                      f"{len(claims)} sentences supported)[/dim]")
