"""One harness for everything that starts real processes and servers: the e2e tests, the
integration tests that need a real socket, and the scripts in bench/.

- `ports`: free loopback ports.
- `processes`: child processes with their output in a log file, stopped in order, killed at
  interpreter exit if a run was interrupted; the `imagefleet` CLI run to its end.
- `orchestrator`: `imagefleet serve` on a port, waited for until healthy, restartable.
- `fleet`: an orchestrator and worker processes on this machine, and the data folder (demo
  model, keys) they start from.
- `servers`: an ASGI app served by uvicorn in a thread, for tests that need a real socket.
"""
