"""The `imagefleet` command. Each sub-module adds one group of commands; they only translate
between the command line and the library."""

from __future__ import annotations

import typer

from imagefleet.cli import admin, deploy, fleet, jobs, pools, simulate, submit, tiny_zoo, training

app = typer.Typer(
    help="imagefleet: serve generative image models on a pull-based fleet of GPU workers.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(admin.keys_app, name="keys")
app.add_typer(admin.models_app, name="models")
app.add_typer(admin.db_app, name="db")
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(training.train_app, name="train")
fleet.register(app)
submit.register(app)
simulate.register(app)
pools.register(app)
deploy.register(app)  # issue 15: deploy, deployments ...
tiny_zoo.register(admin.models_app)


def main() -> None:
    app()
