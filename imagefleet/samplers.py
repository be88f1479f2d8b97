"""The samplers a job may ask for: API names, the labels A1111-style tools show, and aliases.

This is the torch-free half of the sampler table: the API (protocol.py), the CLI and PNG
metadata read it; the worker's half (worker/engines/schedulers.py) maps the same names to
diffusers scheduler classes. Images made by imagefleet say "Sampler: DPM++ 2M Karras" in their
metadata, as the A1111 web UI writes it, so that tools reading that metadata (Civitai's image
pages, PNG-info readers, "send to txt2img" buttons) recognise it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Sampler(StrEnum):
    """API names of the samplers; the wire format accepts exactly these (or an alias)."""

    ddim = "ddim"
    euler = "euler"
    euler_ancestral = "euler_ancestral"
    heun = "heun"
    lms = "lms"
    pndm = "pndm"
    dpmpp_2m = "dpmpp_2m"
    dpmpp_2m_karras = "dpmpp_2m_karras"
    dpmpp_sde = "dpmpp_sde"
    dpmpp_sde_karras = "dpmpp_sde_karras"
    dpmpp_2m_sde = "dpmpp_2m_sde"
    dpmpp_2m_sde_karras = "dpmpp_2m_sde_karras"
    unipc = "unipc"
    lcm = "lcm"


@dataclass(frozen=True)
class SamplerName:
    """How one sampler is written elsewhere: its A1111 label and other accepted spellings."""

    label: str
    aliases: tuple[str, ...] = ()


SAMPLER_NAMES: dict[Sampler, SamplerName] = {
    Sampler.ddim: SamplerName("DDIM"),
    Sampler.euler: SamplerName("Euler", ("k_euler",)),
    Sampler.euler_ancestral: SamplerName("Euler a", ("euler_a", "k_euler_a")),
    Sampler.heun: SamplerName("Heun", ("k_heun",)),
    Sampler.lms: SamplerName("LMS", ("k_lms",)),
    # A1111's PLMS is diffusers' PNDM without its Runge-Kutta warm-up, which is how it runs here.
    Sampler.pndm: SamplerName("PLMS", ("plms",)),
    Sampler.dpmpp_2m: SamplerName("DPM++ 2M", ("k_dpmpp_2m",)),
    Sampler.dpmpp_2m_karras: SamplerName("DPM++ 2M Karras", ("k_dpmpp_2m_ka",)),
    Sampler.dpmpp_sde: SamplerName("DPM++ SDE", ("k_dpmpp_sde",)),
    Sampler.dpmpp_sde_karras: SamplerName("DPM++ SDE Karras", ("k_dpmpp_sde_ka",)),
    Sampler.dpmpp_2m_sde: SamplerName("DPM++ 2M SDE", ("k_dpmpp_2m_sde",)),
    Sampler.dpmpp_2m_sde_karras: SamplerName("DPM++ 2M SDE Karras", ("k_dpmpp_2m_sde_ka",)),
    Sampler.unipc: SamplerName("UniPC"),
    Sampler.lcm: SamplerName("LCM"),
}


def _spellings() -> dict[str, Sampler]:
    """Every accepted spelling, folded to lower case, to the sampler it names."""
    found: dict[str, Sampler] = {}
    for sampler, names in SAMPLER_NAMES.items():
        for spelling in (sampler.value, names.label, *names.aliases):
            key = spelling.casefold()
            if found.setdefault(key, sampler) is not sampler:
                raise AssertionError(f"{spelling!r} names both {found[key]} and {sampler}")
    return found


_BY_SPELLING = _spellings()


def resolve_sampler(name: str) -> Sampler | None:
    """The sampler that ``name`` means (an API name, an A1111 label or an alias, in any case);
    None when it names none."""
    return _BY_SPELLING.get(name.strip().casefold())


def sampler_label(name: str) -> str:
    """The A1111 label of a sampler for metadata; an unknown name is returned unchanged."""
    sampler = resolve_sampler(name)
    return SAMPLER_NAMES[sampler].label if sampler else name
