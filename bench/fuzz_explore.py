"""Open-ended API fuzzing: the suite's fuzz test, again and again with new random seeds, for as
long as a time budget allows; then every distinct finding with the seed that replays it.

The test suite fuzzes with a fixed set of seeds (tests/integration/test_fuzz.py, SEEDS), so that
CI is deterministic. New seeds find new inputs; this script spends spare machine time on them
without making anyone's CI red. Each round runs the test in its own pytest process with
IMAGEFLEET_FUZZ_SEED set to a fresh seed and reads the findings from its JSON report.

    .venv/bin/python bench/fuzz_explore.py                        # 10 minutes on SQLite
    .venv/bin/python bench/fuzz_explore.py --budget 3600 --examples 100 --dialects sqlite,postgresql
    .venv/bin/python bench/fuzz_explore.py --rounds 1 --examples 5  # a quick look

A finding is replayed with the command printed beside it. A seed worth keeping (one that found a
bug, once fixed) goes into SEEDS in a deliberate commit. Exit status: 0 when no round found
anything, 1 when one did, 2 when a round could not run (pytest failed for another reason).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEST = "tests/integration/test_fuzz.py"
PYTEST_EXIT_TESTS_FAILED = 1


@dataclass
class Round:
    seed: int
    seconds: float
    requests: dict[str, int] = field(default_factory=dict)  # by dialect
    findings: list[dict[str, Any]] = field(default_factory=list)
    broken: str = ""  # pytest failed without a report: the harness, not the app


@dataclass
class Exploration:
    rounds: list[Round] = field(default_factory=list)

    def distinct_findings(self) -> dict[tuple[str, str, str, str], tuple[dict[str, Any], int]]:
        """Each (dialect, kind, operation, detail) once, with the shortest example and the
        seed that showed it."""
        found: dict[tuple[str, str, str, str], tuple[dict[str, Any], int]] = {}
        for done in self.rounds:
            for finding in done.findings:
                key = (finding["dialect"], finding["kind"], finding["operation"], finding["detail"])
                seen = found.get(key)
                if seen is None or len(finding["example"]) < len(seen[0]["example"]):
                    found[key] = (finding, done.seed)
        return found


def replay_command(dialect: str, seed: int, examples: int) -> str:
    knob = "IMAGEFLEET_FUZZ_EXAMPLES" if dialect == "sqlite" else "IMAGEFLEET_FUZZ_PG_EXAMPLES"
    return (
        f"IMAGEFLEET_FUZZ_DIALECTS={dialect} IMAGEFLEET_FUZZ_SEED={seed} {knob}={examples} "
        f".venv/bin/pytest {TEST}"
    )


def run_round(seed: int, args: argparse.Namespace, scratch: Path, timeout: float) -> Round:
    """One pytest run of the fuzz test with this seed; its findings from the JSON report."""
    report = scratch / f"fuzz-{seed}.json"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "IMAGEFLEET_FUZZ_SEED": str(seed),
        "IMAGEFLEET_FUZZ_EXAMPLES": str(args.examples),
        "IMAGEFLEET_FUZZ_PG_EXAMPLES": str(args.pg_examples or max(1, args.examples // 4)),
        "IMAGEFLEET_FUZZ_DIALECTS": ",".join(args.dialects),
        "IMAGEFLEET_FUZZ_REPORT": str(report),
    }
    command = [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider"]
    command += ["--timeout", str(int(timeout))]
    started = time.monotonic()
    done = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        check=False,
    )
    result = Round(seed, time.monotonic() - started)
    for dialect in args.dialects:
        path = report.with_name(f"{report.stem}-{dialect}{report.suffix}")
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        result.requests[dialect] = int(data["requests"])
        result.findings += [{**finding, "dialect": dialect} for finding in data["findings"]]
    if done.returncode not in (0, PYTEST_EXIT_TESTS_FAILED) or (
        done.returncode == PYTEST_EXIT_TESTS_FAILED and not result.findings
    ):
        tail = (done.stdout + done.stderr)[-3000:]
        result.broken = f"pytest exited with {done.returncode}:\n{tail}"
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--budget", type=float, default=600.0, help="Seconds to explore.")
    parser.add_argument("--rounds", type=int, default=0, help="At most this many (0: no bound).")
    parser.add_argument("--examples", type=int, default=40, help="Per operation and mode, SQLite.")
    parser.add_argument(
        "--pg-examples", type=int, default=0, help="On PostgreSQL (0: a quarter of --examples)."
    )
    parser.add_argument(
        "--dialects",
        type=lambda value: [v for v in value.split(",") if v],
        default=["sqlite"],
        help="Comma-separated: sqlite, postgresql.",
    )
    parser.add_argument("--seed", type=int, default=None, help="Seeds the seed draw itself.")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    draw = random.Random(args.seed)
    exploration = Exploration()
    deadline = time.monotonic() + args.budget
    longest = 0.0
    with tempfile.TemporaryDirectory(prefix="imagefleet-fuzz-") as folder:
        try:
            while not args.rounds or len(exploration.rounds) < args.rounds:
                left = deadline - time.monotonic()
                # A round is not started unless one as long as the longest so far still fits.
                if left <= 0 or (exploration.rounds and left < longest):
                    break
                seed = draw.randrange(2**32)
                print(f"round {len(exploration.rounds) + 1}: seed {seed} ...", flush=True)
                done = run_round(seed, args, Path(folder), timeout=max(60.0, left))
                longest = max(longest, done.seconds)
                exploration.rounds.append(done)
                sent = ", ".join(f"{d} {n}" for d, n in done.requests.items()) or "none"
                print(
                    f"  {done.seconds:.0f} s, requests: {sent}, findings: {len(done.findings)}"
                    + (f"\n  ROUND BROKEN: {done.broken}" if done.broken else ""),
                    flush=True,
                )
        except KeyboardInterrupt:
            print("interrupted; reporting the rounds that finished", file=sys.stderr)
    return report(exploration, args)


def report(exploration: Exploration, args: argparse.Namespace) -> int:
    rounds = exploration.rounds
    requests = sum(sum(r.requests.values()) for r in rounds)
    seconds = sum(r.seconds for r in rounds)
    print(f"\n{len(rounds)} rounds, {requests} requests in {seconds:.0f} s")
    found = exploration.distinct_findings()
    pg_examples = args.pg_examples or max(1, args.examples // 4)
    for (dialect, kind, operation, detail), (finding, seed) in found.items():
        examples = args.examples if dialect == "sqlite" else pg_examples
        print(
            f"- [{kind}] {operation}: {detail} (seed {seed}, {dialect})\n"
            f"    {finding['example']}\n"
            f"    replay: {replay_command(dialect, seed, examples)}"
        )
    broken = [r for r in rounds if r.broken]
    if broken:
        print(f"{len(broken)} rounds could not run; first (seed {broken[0].seed}):")
        print(broken[0].broken)
        return 2
    if found:
        return 1
    print("no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
