"""Dev mode (`tether dev`): the scheduler in-process plus local worker processes."""

from tether_operator.dev.embedded import DevError
from tether_operator.dev.options import DevOptions
from tether_operator.dev.supervisor import DevSupervisor, run_dev
from tether_operator.dev.workers import DEV_NODES

__all__ = ["DEV_NODES", "DevError", "DevOptions", "DevSupervisor", "run_dev"]
