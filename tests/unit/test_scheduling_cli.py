"""`imagefleet simulate` end to end through typer's runner, on a tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from imagefleet.cli import app

TINY = {
    "seed": 2,
    "workload": {
        "hours": 0.1,
        "checkpoints": {"count": 30, "zipf": 1.5},
        "loras": {"count": 60, "zipf": 1.0},
        "spike": {"duration_s": 0},
        "batch_clients": [],
    },
    "fleet": {
        "gpus": [
            {"name": "RTX 4090", "count": 2, "seconds_per_unit": 5.0, "hourly_usd": 0.35,
             "vram_gb": 24, "disk_gb": 100, "bandwidth_mb_s": 500, "interruptions_per_hour": 0},
            {"name": "A100", "count": 1, "seconds_per_unit": 4.0, "hourly_usd": 1.4,
             "vram_gb": 80, "disk_gb": 200, "bandwidth_mb_s": 1000, "interruptions_per_hour": 0},
        ]
    },
    "plan": {"max_per_type": 3, "max_simulations": 12},
}  # fmt: skip
runner = CliRunner()


def config_file(tmp_path: Path, data: dict = TINY) -> Path:
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_simulate_prints_a_table_and_writes_json_and_a_chart(tmp_path: Path) -> None:
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    result = runner.invoke(
        app,
        ["simulate", "--config", str(config_file(tmp_path)), "--policies", "model-aware,fifo",
         "--json", str(out), "--chart", str(png), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "images / hour" in result.output
    document = json.loads(out.read_text())
    assert [p["policy"] for p in document["policies"]] == ["model-aware", "fifo"]
    assert document["workload"]["jobs"] == document["policies"][0]["jobs"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_parameters_exit_2_naming_the_field(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    result = runner.invoke(app, ["simulate", "--config", str(path), "--hours", "-1"])
    assert result.exit_code == 2
    assert "workload.hours: Input should be greater than 0" in result.output
    result = runner.invoke(app, ["simulate", "--config", str(path), "--policies", "lottery"])
    assert result.exit_code == 2
    assert "--policies: unknown policy 'lottery'" in result.output
    result = runner.invoke(app, ["simulate", "--config", str(path), "--scale", "0"])
    assert result.exit_code == 2 and "--scale: must be > 0" in result.output


def test_plan_answers_with_a_fleet_or_says_none_meets_the_target(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    found = runner.invoke(
        app, ["simulate", "--config", str(path), "--plan", "--target-p95", "120", "--quiet"]
    )
    assert found.exit_code == 0, found.output
    assert "keeps paid p95 wait at" in found.output and "a day" in found.output
    impossible = runner.invoke(
        app, ["simulate", "--config", str(path), "--plan", "--target-p95", "0.1", "--quiet"]
    )
    assert impossible.exit_code == 3
    assert "no fleet within the search bounds" in impossible.output


def test_write_config_saves_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "defaults.yaml"
    result = runner.invoke(app, ["simulate", "--write-config", str(path)])
    assert result.exit_code == 0
    data = yaml.safe_load(path.read_text())
    assert data["workload"]["offered_load"] == 0.8
    assert {gpu["name"] for gpu in data["fleet"]["gpus"]} >= {"RTX 3090", "H100 80GB"}
