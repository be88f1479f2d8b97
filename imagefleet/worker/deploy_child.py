"""The process a Python deployment runs in (started by deploy_process.py; standard library
only, so it runs under any interpreter, a deployment's own venv included, and imports nothing
of the worker's).

It speaks JSON lines: requests on stdin (`setup`, `run`, `cancel`), events on the stdout it
was started with (`setup_done`, `progress`, `done`, `cancelled`, `error`). The user's own
prints go to stderr instead, so they cannot corrupt the protocol. A `cancel` may arrive while
`run` works: a reader thread sets the flag that `context.cancelled()` reads.

A worker may start one before it knows the version (a spare), importing the heavy modules
named on its command line meanwhile (torch, diffusers: tens of seconds on a busy CPU), so the
first run of a new version pays only for its own setup. `setup` names the package directory.

Usage: python deploy_child.py [MODULE[:ATTRIBUTE],...]
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import sys
import threading
import traceback
from pathlib import Path
from typing import Any


class Context:
    """What `run(inputs, context)` gets: progress reports, the cancel flag, the device, the
    job's seed and the directory its output files go to."""

    def __init__(self, emit: Any, cancel: threading.Event, request: dict[str, Any]) -> None:
        self._emit = emit
        self._cancel = cancel
        self.device: str = request.get("device") or "cpu"
        self.seed: int | None = request.get("seed")
        self.output_dir: str = request["output_dir"]
        self.job_id: str | None = request.get("job_id")

    def progress(self, step: int, total: int) -> None:
        self._emit({"event": "progress", "step": int(step), "total": int(total)})

    def cancelled(self) -> bool:
        return self._cancel.is_set()


def main(preload: list[str]) -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the user's prints (and C libraries') land on stderr
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        with lock:
            protocol.write(json.dumps(event) + "\n")
            protocol.flush()

    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    cancel = threading.Event()

    def read() -> None:
        for line in sys.stdin:
            message = json.loads(line)
            if message.get("op") == "cancel":
                cancel.set()
            else:
                requests.put(message)
        requests.put(None)

    threading.Thread(target=read, daemon=True).start()
    for name in preload:  # `module` or `module:attribute` (diffusers imports lazily)
        module_name, _, attribute = name.partition(":")
        try:
            imported = importlib.import_module(module_name)
            if attribute:
                getattr(imported, attribute)
        except Exception:
            continue
    emit({"event": "preloaded"})
    module: Any = None
    while (request := requests.get()) is not None:
        op = request.get("op")
        try:
            if op == "setup":
                package_dir = request["package_dir"]
                os.chdir(package_dir)
                sys.path.insert(0, package_dir)
                module = _load(Path(package_dir) / "pipeline.py")
                if hasattr(module, "setup"):
                    module.setup(request.get("models", {}))
                emit({"event": "setup_done"})
            elif op == "run":
                cancel.clear()
                context = Context(emit, cancel, request)
                outputs = module.run(request.get("inputs", {}), context)
                if cancel.is_set():
                    emit({"event": "cancelled"})
                else:
                    names = None if outputs is None else [str(name) for name in outputs]
                    emit({"event": "done", "outputs": names})
        except BaseException as exc:
            emit(
                {
                    "event": "error",
                    "stage": op,
                    "message": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=20),
                }
            )
            if op == "setup" or isinstance(exc, KeyboardInterrupt | SystemExit):
                return 1
    return 0


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pipeline"] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(main([name for name in (sys.argv[1:2] or [""])[0].split(",") if name]))
