"""The live path: an authenticated tick ingest service with durable landing (SPEC §6).

Owns the HTTP ingest (:mod:`.app`), its request models (:mod:`.models`), its settings read once
from the environment (:mod:`.settings`) and the durable landing log with idempotency and
dead letters (:mod:`.landing`). Plain Python, no Dagster: the CLI (``fbe serve``) and tests may
import it; the batch pipeline does not.
"""
