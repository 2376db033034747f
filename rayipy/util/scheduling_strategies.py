"""Ray's scheduling strategy classes, under Ray's module name
(``from rayipy.util.scheduling_strategies import NodeAffinitySchedulingStrategy``).
They are defined, with what each does to a task's request, in ``rayipy.core.strategies``."""

from rayipy.core.strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

DEFAULT_SCHEDULING_STRATEGY = "DEFAULT"
SPREAD_SCHEDULING_STRATEGY = "SPREAD"

__all__ = ["DEFAULT_SCHEDULING_STRATEGY", "NodeAffinitySchedulingStrategy",
           "PlacementGroupSchedulingStrategy", "SPREAD_SCHEDULING_STRATEGY"]
