"""Drivers: the micro-batch stream (schedule, backpressure, exactly-once recovery)."""
from irfront.drivers.backpressure import InFlightWindow
from irfront.drivers.stream import (Batch, BatchRecord, MicroBatchStream, RecoveryError,
                                    StreamReport)

__all__ = ["Batch", "BatchRecord", "InFlightWindow", "MicroBatchStream", "RecoveryError",
           "StreamReport"]
