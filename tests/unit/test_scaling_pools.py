"""The pools file: a valid one loads with prices resolved; every bad one is refused at load time
with a message naming the pool and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefleet.scaling.pools import (
    KubernetesSettings,
    LocalSettings,
    PoolConfigError,
    SaladSettings,
    load_pools,
    parse_pools,
)

DOCS = Path(__file__).parents[2] / "docs" / "autoscaling.md"

VALID = """
[prices]
"RTX 4090" = 0.30
"A100 80GB" = 1.60

[pools.salad-4090]
gpu = "RTX 4090"
vram_mb = 24564
kinds = ["txt2img", "img2img"]
max = 20
scale_up_step = 4
[pools.salad-4090.provider]
type = "salad"
organization = "acme"
project = "prod"
container_group = "workers-4090"

[pools.a100]
gpu = "A100 80GB"
vram_mb = 81920
price_per_hour = 1.20
min = 1
max = 4
rule = "throughput"
target_wait_seconds_by_tier = { paid = 15 }
[pools.a100.provider]
type = "kubernetes"
namespace = "gpu"
deployment = "worker-a100"

[pools.here]
gpu = "cpu"
vram_mb = 1
price_per_hour = 0
max = 2
[pools.here.provider]
type = "local"
args = ["--url", "http://127.0.0.1:8000"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PoolConfigError) as caught:
        parse_pools(text, source="pools.toml")
    return caught.value.problems


def pool(body: str, provider: str = 'type = "local"', name: str = "gpu-a") -> str:
    return f"[pools.{name}]\n{body}\n[pools.{name}.provider]\n{provider}\n"


BASE = 'gpu = "RTX 4090"\nvram_mb = 24564\nprice_per_hour = 0.3\nmax = 4'


def test_a_valid_file_loads_every_pool_with_its_name_and_provider() -> None:
    config = parse_pools(VALID)
    assert sorted(config.pools) == ["a100", "here", "salad-4090"]
    salad = config.pool("salad-4090")
    assert salad.name == "salad-4090"
    assert isinstance(salad.provider, SaladSettings)
    assert salad.provider.api_key_env == "SALAD_API_KEY"
    assert salad.kinds == ["txt2img", "img2img"]
    assert isinstance(config.pool("a100").provider, KubernetesSettings)
    assert isinstance(config.pool("here").provider, LocalSettings)


def test_a_pool_without_a_price_takes_its_gpus_price_and_its_own_price_wins() -> None:
    config = parse_pools(VALID)
    assert config.pool("salad-4090").price_per_hour == 0.30
    assert config.pool("a100").price_per_hour == 1.20


def test_target_wait_is_per_tier_with_the_pool_default_for_the_others() -> None:
    a100 = parse_pools(VALID).pool("a100")
    assert a100.target_wait("paid") == 15
    assert a100.target_wait("free") == 60


def test_serves_checks_kind_pixels_vram_and_the_model_set() -> None:
    text = pool(BASE + '\nkinds = ["txt2img"]\nmax_pixels = 262144\nmodels = ["sdxl-base"]')
    gpu = parse_pools(text).pool("gpu-a")
    assert gpu.serves("txt2img", 512 * 512, 8000, "sdxl-base")
    assert not gpu.serves("inpaint", 512 * 512, None, None)
    assert not gpu.serves("txt2img", 1024 * 1024, None, None)
    assert not gpu.serves("txt2img", 512 * 512, 40000, None)
    assert not gpu.serves("txt2img", 512 * 512, None, "sd15")


def test_min_above_max_names_the_pool_and_field() -> None:
    found = problems(pool(BASE.replace("max = 4", "min = 5\nmax = 4")))
    assert found == ["pool 'gpu-a', field 'max': must be at least min (5), got 4"]


def test_negative_limits_are_refused_each_by_name() -> None:
    found = problems(
        pool(BASE.replace("max = 4", "max = -1") + "\nmin = -2\nscale_down_cooldown_seconds = -5")
    )
    assert "pool 'gpu-a', field 'min': Input should be greater than or equal to 0" in found
    assert "pool 'gpu-a', field 'max': Input should be greater than or equal to 0" in found
    assert any(p.startswith("pool 'gpu-a', field 'scale_down_cooldown_seconds'") for p in found)


def test_an_unknown_provider_is_refused_with_the_known_ones() -> None:
    found = problems(pool(BASE, 'type = "aws"'))
    assert found == [
        "pool 'gpu-a', field 'provider': unknown provider 'aws'; expected one of "
        "local, kubernetes, salad, command"
    ]


def test_a_provider_without_a_type_is_refused() -> None:
    found = problems(pool(BASE, 'namespace = "x"'))
    assert found == [
        "pool 'gpu-a', field 'provider': provider.type is required: one of "
        "local, kubernetes, salad, command"
    ]


def test_missing_provider_settings_are_named_under_provider() -> None:
    found = problems(pool(BASE, 'type = "salad"\norganization = "acme"'))
    assert found == [
        "pool 'gpu-a', field 'provider.project': required",
        "pool 'gpu-a', field 'provider.container_group': required",
    ]


def test_a_pool_with_no_price_anywhere_says_where_one_can_go() -> None:
    found = problems(pool(BASE.replace("price_per_hour = 0.3\n", "")))
    assert found == [
        "pool 'gpu-a', field 'price_per_hour': required, or a [prices] entry for the pool's gpu"
    ]


def test_a_misspelt_field_is_an_error_not_ignored() -> None:
    found = problems(pool(BASE + "\nmax_replicas = 9"))
    assert found == [
        "pool 'gpu-a', field 'max_replicas': unknown field (check its spelling in "
        "docs/autoscaling.md)"
    ]


def test_two_pools_on_one_deployment_are_refused() -> None:
    k8s = 'type = "kubernetes"\ndeployment = "worker"'
    found = problems(pool(BASE, k8s, "one") + pool(BASE, k8s, "two"))
    assert len(found) == 1
    assert "pools 'one' and 'two' both scale kubernetes deployment default/worker" in found[0]


def test_bad_names_are_refused() -> None:
    found = problems(
        pool(
            BASE,
            'type = "salad"\norganization = "Acme Corp"\nproject = "p1"\ncontainer_group = "g1"',
            name='"Bad Name"',
        )
    )
    assert any(p.startswith("pool 'Bad Name', field 'name'") for p in found)
    assert any(p.startswith("pool 'Bad Name', field 'provider.organization'") for p in found)


def test_invalid_toml_and_unreadable_files_say_so(tmp_path: Path) -> None:
    assert problems("[pools.a\n")[0].startswith("not valid TOML:")
    with pytest.raises(PoolConfigError) as caught:
        load_pools(tmp_path / "missing.toml")
    assert str(tmp_path / "missing.toml") in str(caught.value)
    assert "cannot read the file" in str(caught.value)


def test_every_toml_example_in_the_docs_loads() -> None:
    blocks = DOCS.read_text().split("```toml\n")[1:]
    assert blocks
    for block in blocks:
        assert parse_pools(block.split("```")[0], source="docs/autoscaling.md").pools
