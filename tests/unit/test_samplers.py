"""One sampler table: API names, A1111 labels and aliases, and the diffusers class for each."""

from __future__ import annotations

import pytest

from imagefleet.kinds.txt2img import Txt2ImgParams
from imagefleet.protocol import SCHEDULER_NAMES
from imagefleet.samplers import SAMPLER_NAMES, Sampler, resolve_sampler, sampler_label
from imagefleet.worker.engines.schedulers import SCHEDULERS, scheduler_spec

BASE = {"prompt": "a cat", "model": "demo"}


def test_every_sampler_has_a_label_and_a_diffusers_scheduler() -> None:
    assert set(SAMPLER_NAMES) == set(Sampler) == set(SCHEDULERS)
    assert tuple(sampler.value for sampler in Sampler) == SCHEDULER_NAMES


@pytest.mark.parametrize(
    ("spelling", "sampler"),
    [
        ("dpmpp_2m_karras", Sampler.dpmpp_2m_karras),
        ("DPM++ 2M Karras", Sampler.dpmpp_2m_karras),
        ("dpm++ 2m karras", Sampler.dpmpp_2m_karras),
        ("Euler a", Sampler.euler_ancestral),
        ("k_euler_a", Sampler.euler_ancestral),
        ("DPM++ 2M SDE Karras", Sampler.dpmpp_2m_sde_karras),
        ("DPM++ SDE", Sampler.dpmpp_sde),
        (" UniPC ", Sampler.unipc),
        ("PLMS", Sampler.pndm),
    ],
)
def test_a1111_labels_and_aliases_name_their_sampler(spelling: str, sampler: Sampler) -> None:
    assert resolve_sampler(spelling) is sampler
    assert Txt2ImgParams(**BASE, scheduler=spelling).scheduler is sampler
    assert scheduler_spec(spelling) is SCHEDULERS[sampler]


def test_unknown_names_resolve_to_nothing_and_are_refused() -> None:
    assert resolve_sampler("dpm_fast") is None
    with pytest.raises(ValueError, match="unknown scheduler 'dpm_fast'"):
        scheduler_spec("dpm_fast")


def test_metadata_labels_are_what_a1111_writes() -> None:
    assert sampler_label("dpmpp_2m_karras") == "DPM++ 2M Karras"
    assert sampler_label("euler_ancestral") == "Euler a"
    assert sampler_label("something_else") == "something_else"


def test_the_stored_name_is_the_api_name_whatever_was_sent() -> None:
    params = Txt2ImgParams(**BASE, scheduler="DPM++ 2M Karras")
    assert params.model_dump(mode="json")["scheduler"] == "dpmpp_2m_karras"
