"""Simulator and plan parameters: defaults, files, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefleet.scheduling.simulator.config import (
    ConfigError,
    SimConfig,
    defaults_document,
    load_config,
    parse_config,
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"workload": {"hours": 0}}, "workload.hours: Input should be greater than 0"),
        ({"workload": {"tiers": {"paid": {"priority": 1, "share": 0.5, "owners": 3}}}},
         "workload.tiers: the shares must add up to 1"),
        ({"workload": {"steps": [40, 20]}}, "workload.steps: expected 0 < low <= high"),
        ({"workload": {"loras": {"count": 5, "zipf": 1, "per_request": [0.5, 0.6]}}},
         "workload.loras.per_request: expected probabilities >= 0 adding up to 1"),
        ({"workload": {"jobs_per_day": 1000}},
         "workload.offered_load, jobs_per_day: set exactly one"),
        ({"workload": {"batch_clients": [{"name": "b", "tier": "gold", "batches": 1,
                                          "jobs_per_batch": 5}]}},
         "workload.batch_clients.0.tier: unknown tier 'gold'"),
        ({"fleet": {"gpus": [{"name": "x", "count": 0, "seconds_per_unit": 1, "hourly_usd": 1,
                              "vram_gb": 8, "disk_gb": 10, "bandwidth_mb_s": 10,
                              "interruptions_per_hour": 0}]}},
         "fleet.gpus: the fleet has no GPU"),
        ({"fleet": {"gpus": [{"name": "x", "count": 1}]}},
         "fleet.gpus.0.seconds_per_unit: Field required"),
        ({"fleet": {"disk_to_gpu_gb_s": -1}},
         "fleet.disk_to_gpu_gb_s: Input should be greater than 0"),
        ({"policy": {"aging_bound": 60}}, "policy.aging_bound: unknown knob"),
        ({"policy": {"aging_bound_s": 60, "aging_lead_s": 120}},
         "policy.aging_lead_s: must be below"),
        ({"plan": {"tier": "gold"}}, "plan.tier: unknown tier 'gold'"),
        ({"plan": {"target_p95_s": 0}}, "plan.target_p95_s: Input should be greater than 0"),
        ({"wokload": {}}, "wokload: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_every_bad_parameter_is_reported_with_its_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    assert message in str(error.value)


def test_several_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"seed": -1, "workload": {"hours": -2}})
    assert "seed: Input should be greater than or equal to 0" in str(error.value)
    assert "workload.hours: Input should be greater than 0" in str(error.value)


def test_files_in_yaml_or_json_override_only_what_they_name(tmp_path: Path) -> None:
    yaml_file = tmp_path / "sim.yaml"
    yaml_file.write_text("seed: 9\nworkload:\n  hours: 2\n")
    config = load_config(yaml_file)
    assert (config.seed, config.workload.hours) == (9, 2.0)
    assert config.fleet == SimConfig().fleet
    json_file = tmp_path / "sim.json"
    json_file.write_text('{"workload": {"offered_load": 0.5}}')
    assert load_config(json_file).workload.offered_load == 0.5
    assert load_config(None) == SimConfig()


def test_unreadable_or_malformed_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config: cannot read"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections, got list"):
        load_config(listed)


def test_the_defaults_round_trip_through_their_document() -> None:
    assert parse_config(defaults_document()) == SimConfig()


def test_the_policy_is_calibrated_to_the_fleet_unless_overridden() -> None:
    config = parse_config({"fleet": {"checkpoint_load_s": 7.0}, "policy": {"combo_switch_s": 1.0}})
    policy = config.policy_config()
    assert policy.checkpoint_load_s == 7.0
    assert policy.combo_switch_s == 1.0
