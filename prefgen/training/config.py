"""Typed config of params.yaml's `trainer` section: where and how every training stage runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from prefgen.params import PositiveInt, section

C = TypeVar("C")


@dataclass(frozen=True)
class TrainerConfig:
    """Section `trainer`, read by every training stage; the model's own hyperparameters stay in its section."""

    # auto: the GPU when torch sees one, else the CPU. cuda with no GPU visible is an error, never a silent CPU run.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 on a GPU that has it (fp16 on one that has not), none on the CPU, where autocast is slower here.
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    # Batches whose gradients add up before each optimiser step: a larger effective batch at the memory of one.
    grad_accum_steps: PositiveInt = 1


@dataclass(frozen=True)
class Training(Generic[C]):
    """A training stage's config: its model's own section beside the shared `trainer` section."""

    model: C
    trainer: TrainerConfig = TrainerConfig()


def training_section(params: dict[str, Any] | None, cls: type[C], name: str) -> Training[C]:
    """Section `name` as `cls` and the `trainer` section (its defaults where params.yaml has none)."""
    trainer = section(params, TrainerConfig, "trainer") if params and "trainer" in params else TrainerConfig()
    return Training(section(params, cls, name), trainer)
