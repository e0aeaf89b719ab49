"""Governance: users and their roles and second factors (and, next, versioned configuration
and monitors) over the operational store (:mod:`fbe_pipeline.ops`)."""
