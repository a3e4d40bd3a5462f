"""The store: call records, the append-only ledger (the truth), dedupe, rollups and snapshots.

One writer thread owns it (:class:`Store`): batches prepared elsewhere (:func:`prepare`) are deduped,
appended, fsynced and folded into the rollups; commit listeners (the usage index, budgets) see what
was stored as :class:`Committed`.
"""

from costspan.processor.store._batch import Committed, PreparedBatch, prepare, records_of
from costspan.processor.store._ledger import FsyncPolicy, Ledger, Position
from costspan.processor.store._records import API_SOURCE, RECORD_VERSION, CallRecord, TokenCounts
from costspan.processor.store._rollups import Rollups
from costspan.processor.store._store import IngestResult, QueueFullError, Store, StoreConfig
from costspan.processor.store._sums import Sums

__all__ = [
    "API_SOURCE",
    "RECORD_VERSION",
    "CallRecord",
    "Committed",
    "FsyncPolicy",
    "IngestResult",
    "Ledger",
    "Position",
    "PreparedBatch",
    "QueueFullError",
    "Rollups",
    "Store",
    "StoreConfig",
    "Sums",
    "TokenCounts",
    "prepare",
    "records_of",
]
