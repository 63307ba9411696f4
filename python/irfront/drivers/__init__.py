"""Drivers: the micro-batch stream (schedule, backpressure, exactly-once recovery), and
its durable checkpoints (a store of checkpoints, detached reducers, resuming)."""
from irfront.drivers.backpressure import InFlightWindow
from irfront.drivers.checkpoints import CheckpointStore, DirectoryStore
from irfront.drivers.durable import StreamFinishedError
from irfront.drivers.stream import (Batch, BatchRecord, MicroBatchStream, RecoveryError,
                                    StreamReport)

__all__ = ["Batch", "BatchRecord", "CheckpointStore", "DirectoryStore", "InFlightWindow",
           "MicroBatchStream", "RecoveryError", "StreamFinishedError", "StreamReport"]
