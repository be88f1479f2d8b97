"""The opt-in compiled simulator: `scripts/compile-simulator` builds the simulator's hot loop
and the policy it calls with mypyc (the same source, compiled to C extensions) into a copy of
the package under `build/simulator-ext`, with a digest of the scheduling sources it was built
from. A run that wants it puts that copy first on `sys.path`; `check` refuses a stale build, so
a compiled run never measures code other than the tree's.

Pure Python stays the default everywhere (the orchestrator never imports the copy); compiled
runs report exactly the same figures for a seed (mypyc keeps Python's float and int semantics),
about 1.4 to 1.6x faster.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "build" / "simulator-ext"
DIGEST_FILE = "SOURCES.sha256"
ENV_FLAG = "IMAGEFLEET_SIM_COMPILED"


def sources_digest(root: Path) -> str:
    """sha256 over the scheduling package's sources under `root` (paths and contents)."""
    digest = hashlib.sha256()
    package = root / "imagefleet" / "scheduling"
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def check(build: Path = BUILD, root: Path = ROOT) -> str | None:
    """None when `build` holds a compiled simulator built from `root`'s current sources, else
    why not (in words for the command line)."""
    stored = build / DIGEST_FILE
    if not stored.exists():
        return f"no compiled simulator in {build}: run scripts/compile-simulator"
    if stored.read_text().strip() != sources_digest(root):
        return f"the compiled simulator in {build} is stale: run scripts/compile-simulator"
    return None


def reexec_compiled(build: Path = BUILD) -> None:
    """Runs this command again with the compiled copy first on the path (never returns), unless
    this process already is that run. Raises SystemExit with the reason if the build is
    missing or stale."""
    if os.environ.get(ENV_FLAG):
        return
    problem = check(build)
    if problem is not None:
        raise SystemExit(problem)
    env = dict(os.environ)
    env[ENV_FLAG] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(build), env.get("PYTHONPATH")) if p)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def running_compiled() -> bool:
    """Whether the simulator's engine imported here is the compiled one."""
    from imagefleet.scheduling.simulator import engine

    return not engine.__file__.endswith(".py") if engine.__file__ else False
