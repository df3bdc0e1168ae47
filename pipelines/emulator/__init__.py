"""A local stand-in for the Accelerate and Qvalia APIs, for tests, the demo and benchmarks.

`World` is the ground truth (generated invoices, Qvalia statuses, orders, business days); `EmulatorServer`
serves it over HTTP on loopback with faults on demand. Nothing here is used by the pipelines themselves.
"""

from pipelines.emulator.server import EmulatorServer, Faults
from pipelines.emulator.world import (
    DayChanges,
    EmulatorError,
    InvalidSendMethod,
    OrderAlreadyInvoiced,
    OrderNotFound,
    World,
)

__all__ = [
    "DayChanges",
    "EmulatorError",
    "EmulatorServer",
    "Faults",
    "InvalidSendMethod",
    "OrderAlreadyInvoiced",
    "OrderNotFound",
    "World",
]
