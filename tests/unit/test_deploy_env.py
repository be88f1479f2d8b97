"""Every environment variable the images, the compose file and the Helm chart set is read by
imagefleet, with a value its reader accepts (deploy/envcheck.py)."""

from __future__ import annotations

import typer.main

from imagefleet.artifacts.s3_config import S3Config
from imagefleet.cli import app
from imagefleet.config import Settings
from tests.unit.deploy_support import load

envcheck = load("deploy/envcheck.py")
validate = load("deploy/validate.py")


def test_readers_cover_every_settings_field_s3_field_and_worker_option() -> None:
    known = envcheck.readers()
    assert {f"IMAGEFLEET_{field.upper()}" for field in Settings.model_fields} <= set(known)
    assert {f"IMAGEFLEET_S3_{field.upper()}" for field in S3Config.model_fields} <= set(known)
    worker = typer.main.get_command(app).commands["worker"]
    envvars = {param.envvar for param in worker.params if param.envvar}
    assert envvars <= set(known)
    # Every worker option that a container needs is settable from the environment. `--key` is
    # read from $IMAGEFLEET_WORKER_KEY by the command itself (only a key typed on the command
    # line warns that `ps` shows it); `--orchestrator` is a deprecated alias of `--url`.
    assert {param.name for param in worker.params if not param.envvar} == {"key", "orchestrator"}
    assert "IMAGEFLEET_WORKER_KEY" in known


def test_every_variable_the_deployment_files_set_is_read_and_parses() -> None:
    problems = validate.all_dockerfile_problems()
    compose = validate.load_compose()
    for name, service in compose["services"].items():
        problems += envcheck.problems(
            name,
            {key: str(value) for key, value in (service.get("environment") or {}).items()},
            imagefleet_container="build" in service,
        )
    for values in validate.chart_values_files():
        problems += validate.manifest_env_problems(validate.render_chart(values))
    assert problems == []


def test_a_misspelt_variable_is_reported_with_the_name_it_resembles() -> None:
    problems = envcheck.problems(
        "svc", {"IMAGEFLEET_LEASE_SECOND": "30"}, imagefleet_container=True
    )
    assert problems == [
        "svc: IMAGEFLEET_LEASE_SECOND is read by nothing (did you mean IMAGEFLEET_LEASE_SECONDS?)"
    ]


def test_values_are_parsed_as_their_readers_parse_them() -> None:
    problems = envcheck.problems(
        "svc",
        {
            "IMAGEFLEET_LEASE_SECONDS": "30s",
            "IMAGEFLEET_WORKER_MAX_PIXELS": "a lot",
            "IMAGEFLEET_S3_BUCKET": "imagefleet",
            "IMAGEFLEET_S3_ACCESS_KEY_ID": "only-half-of-a-pair",
        },
        imagefleet_container=True,
    )
    assert len(problems) == 3
    assert "IMAGEFLEET_LEASE_SECONDS" in problems[1]
    assert "IMAGEFLEET_WORKER_MAX_PIXELS='a lot' is refused by `imagefleet worker`" in problems[0]
    assert "IMAGEFLEET_S3_SECRET_ACCESS_KEY" in problems[2]


def test_other_containers_may_set_their_own_variables_but_not_unknown_imagefleet_ones() -> None:
    env = {"POSTGRES_PASSWORD": "x", "IMAGEFLEET_DATABASE_URI": "postgresql://db/x"}
    problems = envcheck.problems("postgres", env, imagefleet_container=False)
    assert len(problems) == 1
    assert "IMAGEFLEET_DATABASE_URI is read by nothing" in problems[0]
    assert envcheck.problems("proxy", {"HF_HOME": "/x"}, imagefleet_container=False) == []
    assert envcheck.problems("worker", {"POSTGRES_PASSWORD": "x"}, imagefleet_container=True)
