"""`agentstack serve`, `agentstack chat`, `agentstack models`."""

from __future__ import annotations

import logging
import sys

import typer

from agentstack.cli.app import app
from agentstack.cli.client import ApiClient, ApiError, fail, user_lines
from agentstack.config import load_settings
from agentstack.errors import AgentstackError


def _settings(**server: object):
    try:
        settings = load_settings()
    except AgentstackError as exc:
        raise fail(str(exc), 2) from None
    overrides = {k: v for k, v in server.items() if v is not None}
    if overrides:
        settings = settings.model_copy(update={"server": settings.server.model_copy(update=overrides)})
    return settings


@app.command()
def serve(host: str = typer.Option(None, help="Address to bind (default 127.0.0.1; non-loopback needs keys)."),
          port: int = typer.Option(None, help="Port to bind (default 8000)."),
          vllm: bool = typer.Option(False, "--vllm", help="Start a local vLLM (installed on first use) and serve "
                                    "in front of it: the production topology on one box.")) -> None:
    """Serve the OpenAI-compatible API (and the web chat) on the configured engine."""
    settings = _settings(host=host, port=port)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from server.app import serve as run

    try:
        if vllm:
            from agentstack.cli.vllm_cmd import serve_with_vllm

            return serve_with_vllm(settings, None, None)
        run(settings)
    except AgentstackError as exc:
        raise fail(str(exc), 2) from None


@app.command()
def chat(url: str = typer.Option(None, help="Server URL."), key: str = typer.Option(None, help="API key."),
         model: str = typer.Option(None, help="Model (default: the served alias)."),
         mode: str = typer.Option("plain", help="plain, rag or react."),
         index: str = typer.Option(None, help="Index for rag/react."),
         temperature: float = typer.Option(0.7, help="Sampling temperature."),
         max_tokens: int = typer.Option(256, help="Most new tokens per answer."),
         system: str = typer.Option(None, help="System prompt.")) -> None:
    """Chat in the terminal with a running server, streaming the answers. Ctrl-D or /exit quits."""
    settings = _settings()
    client = ApiClient(settings, url, key)
    if mode != "plain" or index:
        from agentstack.cli.chat_modes import chat_app_api

        return chat_app_api(client, mode=mode, index=index, temperature=temperature, max_tokens=max_tokens)
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    model = model or settings.engine.served_model_name
    typer.echo(f"chatting with {model} at {client.url} (Ctrl-D to quit)")
    for line in user_lines():
        messages.append({"role": "user", "content": line})
        payload = {"model": model, "messages": messages, "stream": True, "temperature": temperature,
                   "max_tokens": max_tokens}
        answer = ""
        sys.stdout.write("bot> ")
        try:
            for chunk in client.stream_sse("/v1/chat/completions", payload):
                if "error" in chunk:
                    raise ApiError(chunk["error"].get("status", 500), chunk["error"]["message"])
                for choice in chunk.get("choices", []):
                    piece = choice.get("delta", {}).get("content") or ""
                    answer += piece
                    sys.stdout.write(piece)
                    sys.stdout.flush()
        except ApiError as exc:
            sys.stdout.write("\n")
            typer.echo(f"error: {exc}", err=True)
            messages.pop()
            if exc.status in (0, 401, 403):
                raise typer.Exit(1) from None
            continue
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": answer})
