"""`imagefleet pools list|show|set|reset|decisions` (admin key) and `imagefleet usage` (client
key; `--fleet` with an admin key): the autoscaler's pools and the cost tables, over the API."""

from __future__ import annotations

from pathlib import Path

import typer

from imagefleet.cli.common import UrlOption
from imagefleet.cli.connection import KeyOption, connect, talking_to
from imagefleet.cli.datadir import DataDirOption
from imagefleet.cli.tables import print_table, when
from imagefleet.scaling.wire import FleetUsageView, KeyUsageView, PoolEdit, PoolView

pools_app = typer.Typer(
    help="Autoscaling pools: limits, status, workers, decisions (admin key).",
    no_args_is_help=True,
)
PoolArgument = typer.Argument(..., help="The pool's name, as in the pools file.")


def register(app: typer.Typer) -> None:
    app.add_typer(pools_app, name="pools")
    app.command("usage")(usage)


def _opt(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def pool_rows(pools: list[PoolView]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for view in pools:
        p, status = view.settings, view.status
        workers = ", ".join(f"{n} {state}" for state, n in sorted(view.workers.items())) or "-"
        rows.append(
            (
                view.name,
                p.provider.type,
                p.gpu,
                f"{p.price_per_hour:.2f}",
                f"{p.min}..{p.max}",
                str(status.desired) if status else "-",
                str(status.actual) if status and status.actual is not None else "-",
                f"{status.queued}/{status.running}" if status else "-",
                workers,
                (status.provider_error or status.reason) if status else "not decided yet",
            )
        )
    return rows


POOL_HEADERS = (
    "pool",
    "provider",
    "gpu",
    "$/h",
    "min..max",
    "desired",
    "actual",
    "queued/running",
    "workers",
    "last decision (or provider error)",
)


@pools_app.command("list")
def pools_list(
    url: str = UrlOption, key: str | None = KeyOption, data_dir: Path | None = DataDirOption
) -> None:
    """Every pool with its limits, replicas, demand, workers and last decision."""
    with talking_to(url), connect(url, key, data_dir) as client:
        pools = client.pools()
    print_table(
        POOL_HEADERS, pool_rows(pools), empty="no pools (set IMAGEFLEET_POOLS_FILE; see docs)"
    )


@pools_app.command("show")
def pools_show(
    name: str = PoolArgument,
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """One pool's settings and status, as JSON."""
    with talking_to(url), connect(url, key, data_dir) as client:
        typer.echo(client.pool(name).model_dump_json(indent=2))


@pools_app.command("set")
def pools_set(
    name: str = PoolArgument,
    min_replicas: int | None = typer.Option(None, "--min", min=0, help="Fewest workers."),
    max_replicas: int | None = typer.Option(None, "--max", min=0, help="Most workers."),
    price: float | None = typer.Option(None, "--price", min=0, help="USD per worker-hour."),
    step: int | None = typer.Option(None, "--step", min=1, help="Most workers added at once."),
    cooldown: float | None = typer.Option(
        None, "--cooldown", min=0, help="Scale-down cooldown, seconds."
    ),
    idle_to_zero: float | None = typer.Option(
        None, "--idle-to-zero", min=0, help="Seconds without work before the last one goes."
    ),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Changes a pool's limits or price live (the loop uses them at its next pass)."""
    edit = PoolEdit(
        min=min_replicas,
        max=max_replicas,
        price_per_hour=price,
        scale_up_step=step,
        scale_down_cooldown_seconds=cooldown,
        idle_to_zero_seconds=idle_to_zero,
    )
    with talking_to(url), connect(url, key, data_dir) as client:
        view = client.edit_pool(name, edit)
    print_table(POOL_HEADERS, pool_rows([view]), empty="")


@pools_app.command("reset")
def pools_reset(
    name: str = PoolArgument,
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Puts the pools file's settings back after `pools set`."""
    with talking_to(url), connect(url, key, data_dir) as client:
        view = client.reset_pool(name)
    print_table(POOL_HEADERS, pool_rows([view]), empty="")


@pools_app.command("decisions")
def pools_decisions(
    pool: str | None = typer.Option(None, "--pool", help="Only this pool's."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """The autoscaler's decisions that changed something (and provider errors), newest first."""
    with talking_to(url), connect(url, key, data_dir) as client:
        found = client.scaling_decisions(pool, limit)
    print_table(
        ("at (UTC)", "pool", "action", "from", "to", "instance", "reason or error", "by"),
        (
            (
                when(d.created_at),
                d.pool,
                d.action,
                str(d.current),
                str(d.desired),
                d.instance_id or d.node_id or "-",
                d.error or d.reason,
                d.decided_by,
            )
            for d in found
        ),
        empty="no decisions yet",
    )


def usage(
    days: int = typer.Option(30, "--days", min=1, max=366, help="Your usage: the last N days."),
    fleet: bool = typer.Option(
        False, "--fleet", help="The fleet's usage per pool and GPU type instead (admin key)."
    ),
    hours: float = typer.Option(24.0, "--hours", min=0.01, help="With --fleet: the last N hours."),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Jobs, images, GPU seconds and cost by day and kind; or, with --fleet, per pool."""
    with talking_to(url), connect(url, key, data_dir) as client:
        if fleet:
            print_fleet_usage(client.fleet_usage(hours))
        else:
            print_key_usage(client.usage(days))


def print_key_usage(view: KeyUsageView) -> None:
    rows = [
        (
            str(r.day),
            r.kind,
            str(r.jobs),
            str(r.images),
            f"{r.gpu_seconds:.1f}",
            f"{r.cost_usd:.4f}",
        )
        for r in view.rows
    ]
    if rows:
        rows.append(
            (
                "total",
                "",
                str(view.jobs),
                str(view.images),
                f"{view.gpu_seconds:.1f}",
                f"{view.cost_usd:.4f}",
            )
        )
    print_table(
        ("day (UTC)", "kind", "jobs", "images", "GPU s", "cost $"),
        rows,
        empty="no finished jobs in that window",
    )


def print_fleet_usage(view: FleetUsageView) -> None:
    print_table(
        ("pool", "gpu", "images", "images/h", "s/image", "images/$", "idle", "cost $"),
        (
            (
                u.pool or "(none)",
                u.gpu or "-",
                str(u.images),
                f"{u.images_per_hour:.1f}",
                _opt(u.seconds_per_image),
                _opt(u.images_per_dollar, "{:.0f}"),
                _opt(None if u.idle_share is None else u.idle_share * 100, "{:.0f}%"),
                _opt(u.cost_usd, "{:.4f}"),
            )
            for u in view.pools
        ),
        empty="no work in that window",
    )
