"""Readers that map vendor files to FBE's raw frames (SPEC §2).

Each reader returns frames with exactly the columns of :mod:`fbe_pipeline.market.frames`; nothing
here
writes to the raw store.
"""
