"""The operator console (issue 11): a small server-rendered web app over the same core functions
as the CLI (approvals, automation status, versioned config, users, audit), behind a login.

:func:`fbe_pipeline.console.app.create_app` builds it; :func:`fbe_pipeline.console.server.serve`
runs it with uvicorn (``fbe console``).
"""
