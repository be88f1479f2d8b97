"""`imagefleet simulate`: run scheduling policies side by side on a simulated fleet, or plan the
cheapest fleet for a wait target (`--plan`). Parameters come from a YAML/JSON file
(docs/simulator.md) with command-line overrides; every bad value is reported with its field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from imagefleet.cli.common import fail

POLICY_HELP = (
    "Comma-separated: model-aware, fifo, declared-models, lookahead-32 (default: all four; "
    "with --plan, model-aware)."
)


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)


def simulate(
    config_file: Path | None = typer.Option(
        None, "--config", help="YAML or JSON parameters (docs/simulator.md); defaults otherwise."
    ),
    policies: str | None = typer.Option(None, "--policies", help=POLICY_HELP),
    seed: int | None = typer.Option(None, "--seed", help="Overrides `seed`."),
    hours: float | None = typer.Option(None, "--hours", help="Overrides `workload.hours`."),
    load: float | None = typer.Option(None, "--load", help="Overrides `workload.offered_load`."),
    scale: float = typer.Option(
        1.0, "--scale", help="Multiply every GPU count (traffic follows at a given load)."
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Write the figures as JSON here."),
    chart_path: Path | None = typer.Option(None, "--chart", help="Write a PNG chart here."),
    plan: bool = typer.Option(False, "--plan", help="Search the cheapest fleet for a p95 target."),
    target_p95: float | None = typer.Option(
        None, "--target-p95", help="Plan: p95 wait target in seconds (`plan.target_p95_s`)."
    ),
    tier: str | None = typer.Option(None, "--tier", help="Plan: the tier the target is for."),
    max_per_type: int | None = typer.Option(
        None, "--max-per-type", help="Plan: at most this many GPUs of each type."
    ),
    write_config: Path | None = typer.Option(
        None, "--write-config", help="Write the full default parameters (YAML) here and exit."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Simulate a GPU fleet serving a model hub's traffic under several scheduling policies."""
    from imagefleet.scheduling.simulator.config import ConfigError, defaults_document

    if write_config is not None:
        _write_defaults(write_config, defaults_document())
        return
    try:
        config = _load(config_file, seed, hours, load, scale, target_p95, tier, max_per_type)
        names = _policy_names(policies, plan)
        if plan:
            _run_plan(config, names, json_path, quiet)
        else:
            _run_compare(config, names, json_path, chart_path, quiet)
    except ConfigError as exc:
        raise fail(f"invalid simulator parameters:\n{exc}", code=2) from None


def _load(
    path: Path | None,
    seed: int | None,
    hours: float | None,
    load: float | None,
    scale: float,
    target_p95: float | None,
    tier: str | None,
    max_per_type: int | None,
) -> Any:
    """The config from `path` with the command line's overrides, validated together."""
    from imagefleet.scheduling.simulator.config import (
        ConfigError,
        default_gpus,
        parse_config,
        read_config_data,
    )

    data = read_config_data(path) if path is not None else {}
    overrides: dict[str, tuple[tuple[str, ...], Any]] = {
        "--seed": (("seed",), seed),
        "--hours": (("workload", "hours"), hours),
        "--load": (("workload", "offered_load"), load),
        "--target-p95": (("plan", "target_p95_s"), target_p95),
        "--tier": (("plan", "tier"), tier),
        "--max-per-type": (("plan", "max_per_type"), max_per_type),
    }
    for where, value in overrides.values():
        if value is not None:
            section = data
            for key in where[:-1]:
                section = section.setdefault(key, {})
            section[where[-1]] = value
    if load is not None:
        data.setdefault("workload", {})["jobs_per_day"] = None
    if not scale > 0:
        raise ConfigError(f"--scale: must be > 0, got {scale}")
    if scale != 1.0:
        fleet = data.setdefault("fleet", {})
        gpus = fleet.get("gpus") or [gpu.model_dump() for gpu in default_gpus()]
        if not isinstance(gpus, list) or not all(isinstance(g, dict) for g in gpus):
            raise ConfigError("fleet.gpus: expected a list of GPU types")
        fleet["gpus"] = [{**gpu, "count": round(gpu.get("count", 0) * scale)} for gpu in gpus]
    return parse_config(data)


def _policy_names(text: str | None, plan: bool) -> list[str]:
    from imagefleet.scheduling.policies import POLICY_NAMES
    from imagefleet.scheduling.simulator.config import ConfigError

    if text is None:
        return ["model-aware"] if plan else list(POLICY_NAMES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in POLICY_NAMES]
    if unknown or not names:
        raise ConfigError(
            f"--policies: unknown policy {unknown[0] if unknown else '(none given)'!r}; "
            f"expected a comma-separated list of {', '.join(POLICY_NAMES)}"
        )
    return names


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=quiet,
        transient=False,
    )


def _run_compare(
    config: Any, names: list[str], json_path: Path | None, chart_path: Path | None, quiet: bool
) -> None:
    from imagefleet.scheduling.simulator.compare import compare, describe
    from imagefleet.scheduling.simulator.report import chart, document, table
    from imagefleet.scheduling.simulator.workload import generate

    console = Console()
    workload = generate(config)
    facts = describe(config, workload)
    console.print(
        f"{facts['jobs']:,} jobs ({facts['images']:,} images) over {facts['hours']:g} h on "
        f"{sum(facts['gpus'].values())} GPUs, offered load {facts['offered_load']:.0%}"
    )
    with _progress(quiet) as bar:
        tasks = {name: bar.add_task(name, total=workload.jobs) for name in names}
        results = compare(
            config,
            workload,
            names,
            progress=lambda name, done, total: bar.update(tasks[name], completed=done),
        )
    console.print(table(results))
    if json_path is not None:
        json_path.write_text(json.dumps(document(results, facts), indent=2) + "\n")
        console.print(f"figures written to {json_path}")
    if chart_path is not None:
        chart(results, chart_path, title=f"{facts['jobs']:,} jobs, {facts['hours']:g} h")
        console.print(f"chart written to {chart_path}")


def _run_plan(config: Any, names: list[str], json_path: Path | None, quiet: bool) -> None:
    from imagefleet.scheduling.policies import make_policy
    from imagefleet.scheduling.simulator.compare import describe
    from imagefleet.scheduling.simulator.config import ConfigError
    from imagefleet.scheduling.simulator.plan import plan
    from imagefleet.scheduling.simulator.workload import generate

    console = Console()
    if len(names) != 1:
        raise ConfigError("--policies: --plan plans for one policy; name one")
    workload = generate(config)
    facts = describe(config, workload)
    spec = config.plan
    console.print(
        f"planning for {facts['jobs']:,} jobs over {facts['hours']:g} h: {spec.tier} p95 wait "
        f"under {spec.target_p95_s:g} s, 0..{spec.max_per_type} GPUs of each type, "
        f"at most {spec.max_simulations} simulations"
    )
    with _progress(quiet) as bar:
        task = bar.add_task("fleets simulated", total=spec.max_simulations)
        result = plan(
            config,
            workload,
            make_policy(names[0], config.policy_config()),
            on_simulation=lambda point: bar.advance(task),
        )
    console.print(result.message)
    if result.exhausted:
        console.print(f"(stopped after {spec.max_simulations} simulations: plan.max_simulations)")
    if json_path is not None:
        data = {
            "workload": facts,
            "target_p95_s": result.target_p95_s,
            "tier": result.tier,
            "best": None if result.best is None else vars(result.best),
            "tried": [vars(point) for point in result.tried],
            "message": result.message,
        }
        json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    if result.best is None:
        raise typer.Exit(3)


def _write_defaults(path: Path, data: dict[str, Any]) -> None:
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n")
    else:
        import yaml

        path.write_text(yaml.safe_dump(data, sort_keys=False))
    typer.echo(f"default parameters written to {path}")
