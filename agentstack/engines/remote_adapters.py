"""LoRA adapters on one or more vLLM replicas: loaded everywhere or nowhere, and kept loaded.

vLLM loads adapters at run time through ``POST /v1/load_lora_adapter`` and forgets them when it
restarts. This module keeps the adapters agentstack loaded (name → path) and:

* loads with ``load_inplace=true``, so loading a name again is idempotent (without it vLLM answers
  400 "has already been loaded");
* loads on every replica or on none: when one replica refuses, the replicas this call loaded are
  unloaded again before the error is raised, so a retry starts from a clean state;
* unloads everywhere, treating "not found" on a replica as already done;
* checks every replica every ``engine.adapter_check_s`` seconds (a daemon thread, started with the
  first adapter) and reloads what a restarted replica lost, so the served alias recovers without
  restarting agentstack. A request that meets a 404 for a tracked adapter triggers the same check
  at once (see ``OpenAIEngine.stream``).

This module knows nothing about aliases or the registry; ``alignment/deploy.py`` decides what is loaded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx

from agentstack.errors import AgentstackError, EngineUnavailableError, InvalidRequestError, NotFoundError

log = logging.getLogger(__name__)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    err = body.get("error", body) if isinstance(body, dict) else body
    return str(err.get("message") if isinstance(err, dict) and err.get("message") else err)[:500]


def load_error(url: str, name: str, path: str, response: httpx.Response) -> AgentstackError:
    """vLLM's answer to a refused load, as a 4xx that says why (vLLM itself answers 500 for
    adapters it cannot serve)."""
    message = _message(response)
    if response.status_code == 404:
        return NotFoundError(f"the model server at {url} found no adapter at {path}: {message}", param="lora_path",
                             fix="give a directory the model server can read (the registry is shared by path)")
    if response.status_code in (401, 403):
        return EngineUnavailableError(f"the model server at {url} refused our key: {message}",
                                      fix="set AGENTSTACK_ENGINE__API_KEY to a key it accepts")
    if response.status_code in (502, 503, 504):
        return EngineUnavailableError(f"the model server at {url} is not ready ({response.status_code}): {message}")
    return InvalidRequestError(f"the model server at {url} refused adapter {name!r} from {path}: {message}",
                               param="lora_path", fix="load a plain LoRA trained on the served base model, within "
                                                      "engine.max_lora_rank")


class RemoteAdapters:
    def __init__(self, urls: Callable[[], list[str]], headers: Callable[[], dict[str, str]], check_s: float,
                 on_change: Callable[[], None] | None = None):
        self._urls = urls
        self._headers = headers
        self.check_s = check_s
        self.on_change = on_change
        self.loaded: dict[str, str] = {}  # name -> path, as agentstack loaded them
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0  # adapters put back on a replica that had lost them

    # -- load / unload (async: called from the server's event loop) ------------------------------------
    async def load(self, client: httpx.AsyncClient, name: str, path: str) -> None:
        loaded_here: list[str] = []
        for url in self._urls():
            try:
                response = await client.post(f"{url}/load_lora_adapter", headers=self._headers(),
                                             json={"lora_name": name, "lora_path": path, "load_inplace": True})
            except httpx.HTTPError as exc:
                await self._undo(client, name, loaded_here)
                with self._lock:
                    where = "keeps its previous weights" if name in self.loaded else "is loaded nowhere"
                raise EngineUnavailableError(f"cannot reach the model server at {url} ({type(exc).__name__}); "
                                             f"adapter {name!r} {where}",
                                             fix="check AGENTSTACK_ENGINE__REPLICA_URLS, then retry") from exc
            if not response.is_success:
                await self._undo(client, name, loaded_here)
                raise load_error(url, name, path, response)
            loaded_here.append(url)
        with self._lock:
            self.loaded[name] = path
        self._ensure_watching()

    async def _undo(self, client: httpx.AsyncClient, name: str, urls: list[str]) -> None:
        """All or nothing: put the replicas this call loaded ``name`` on back as they were. A new
        name is unloaded there; a reload of a tracked name loads its tracked path back in place, so
        no replica serves weights the others do not."""
        with self._lock:
            previous = self.loaded.get(name)
        for url in urls:
            try:
                if previous is None:
                    await client.post(f"{url}/unload_lora_adapter", headers=self._headers(), json={"lora_name": name})
                else:
                    response = await client.post(f"{url}/load_lora_adapter", headers=self._headers(), json={
                        "lora_name": name, "lora_path": previous, "load_inplace": True})
                    if not response.is_success:
                        log.error("could not load %s back from %s on %s after a failed reload: %s", name, previous,
                                  url, _message(response))
            except httpx.HTTPError as exc:
                log.warning("could not undo the load of %s on %s: %s", name, url, type(exc).__name__)

    async def unload(self, client: httpx.AsyncClient, name: str) -> None:
        with self._lock:
            self.loaded.pop(name, None)
        for url in self._urls():
            try:
                response = await client.post(f"{url}/unload_lora_adapter", headers=self._headers(),
                                             json={"lora_name": name})
            except httpx.HTTPError as exc:  # a replica that is down has lost it anyway
                log.warning("could not reach %s to unload %s (%s)", url, name, type(exc).__name__)
                continue
            if response.status_code == 404:
                continue  # not there (restarted, or never loaded there): already done
            if not response.is_success:
                raise InvalidRequestError(f"the model server at {url} refused to unload {name!r}: "
                                          f"{_message(response)}", param="lora_name")

    def adopt(self, found: dict[str, str]) -> None:
        """Track adapters a server already serves (name -> path), e.g. after agentstack restarted
        while vLLM kept running, so they are kept on every replica from now on."""
        if not found:
            return
        with self._lock:
            for name, path in found.items():
                self.loaded.setdefault(name, path)
        self._ensure_watching()

    # -- keeping them loaded ------------------------------------------------------------------------------
    def reconcile(self, timeout: float = 10.0) -> list[tuple[str, str]]:
        """Reload every tracked adapter a reachable replica lacks; returns (url, name) reloaded."""
        with self._lock:
            wanted = dict(self.loaded)
        if not wanted:
            return []
        done = []
        with httpx.Client(timeout=timeout) as client:
            for url in self._urls():
                try:
                    response = client.get(f"{url}/models", headers=self._headers())
                    if not response.is_success:
                        continue
                    present = {m.get("id") for m in response.json().get("data", [])}
                except (httpx.HTTPError, ValueError):
                    continue  # down or starting: try again next round
                for name, path in wanted.items():
                    if name in present:
                        continue
                    with self._lock:  # unloaded meanwhile: leave it
                        if self.loaded.get(name) != path:
                            continue
                    try:
                        r = client.post(f"{url}/load_lora_adapter", headers=self._headers(),
                                        json={"lora_name": name, "lora_path": path, "load_inplace": True})
                    except httpx.HTTPError:
                        break
                    if r.is_success:
                        done.append((url, name))
                        log.warning("reloaded adapter %s on %s (the replica had lost it)", name, url)
                    else:
                        log.error("could not reload adapter %s on %s: %s", name, url, _message(r))
        if done:
            self.reloads += len(done)
            if self.on_change is not None:
                self.on_change()
        return done

    def _ensure_watching(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="adapter-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.check_s):
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001  (the watcher must outlive any one bad round)
                log.exception("adapter check failed")

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def stats(self) -> dict[str, Any]:
        return {"adapters": sorted(self.loaded), "adapter_reloads": self.reloads}
