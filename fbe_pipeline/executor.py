"""The executor of the pipeline's runs, chosen by the environment: configuration only.

``FBE_EXECUTOR`` selects where the steps of a run execute:

``in_process`` (the default, also when unset or empty)
    Every step in the run's own process (Dagster's ``in_process_executor``): a session's steps
    are small, and a subprocess per step costs more than the steps themselves.
``celery``
    Every step as a task on a Celery queue, run by ``dagster-celery`` workers on any machine
    (dagster-celery's ``celery_executor``). ``FBE_CELERY_BROKER`` is the broker URL (e.g.
    ``redis://redis.internal:6379/0``), ``FBE_CELERY_BACKEND`` the result backend URL (e.g.
    ``redis://redis.internal:6379/1``); the workers read the same two variables through
    ``celery.yaml``. The workers must reach the same Dagster instance
    (``DAGSTER_HOME`` with ``dagster.postgres.yaml``), the same raw store and warehouse (S3:
    ``FBE_RAW_BACKEND=s3``, ``FBE_WAREHOUSE_BACKEND=s3``) and be started with the same
    variables; see ``docs/scale_out.md``.

Runs executed in the calling process (``execute_in_process``, as ``fbe materialize`` does)
always use the in-process executor whatever this says; the setting applies to runs launched
through the instance (the UI, backfills, sensors, ``dagster job execute``).
"""

from __future__ import annotations

import os

from dagster import ExecutorDefinition, in_process_executor

EXECUTORS = ("in_process", "celery")
CELERY_SETTINGS = ("FBE_CELERY_BROKER", "FBE_CELERY_BACKEND")


def executor_from_env() -> ExecutorDefinition:
    """The executor named by ``FBE_EXECUTOR`` (see the module docstring).

    For ``celery`` the broker and backend are given to Dagster as references to
    ``FBE_CELERY_BROKER`` / ``FBE_CELERY_BACKEND`` (resolved when a run starts), so a URL with
    a password never appears in a run's stored configuration or the UI.

    Returns
    -------
    dagster.ExecutorDefinition
        ``in_process_executor``, or dagster-celery's ``celery_executor`` configured with the
        broker and backend variables.

    Raises
    ------
    ValueError
        On an ``FBE_EXECUTOR`` other than ``in_process`` or ``celery``, or ``celery`` without
        ``FBE_CELERY_BROKER`` or ``FBE_CELERY_BACKEND`` (dagster-celery would otherwise fall
        back to an AMQP broker on localhost and an RPC backend, and runs would wait for
        workers that never come).
    """
    kind = os.environ.get("FBE_EXECUTOR", "").strip() or "in_process"
    if kind == "in_process":
        return in_process_executor
    if kind != "celery":
        raise ValueError(f"unknown FBE_EXECUTOR {kind!r}; expected one of {', '.join(EXECUTORS)}")
    # Both are required, with no default: the workers (celery.yaml) read the same two
    # variables, and a default on one side only would split executor and workers silently.
    missing = [name for name in CELERY_SETTINGS if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"FBE_EXECUTOR=celery needs {' and '.join(missing)}: the broker and result backend "
            "URLs the workers use (e.g. redis://127.0.0.1:6379/0 and redis://127.0.0.1:6379/1)"
        )
    # Imported here: only a deployment that scales out loads Celery (and its start-up cost).
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {"broker": {"env": "FBE_CELERY_BROKER"}, "backend": {"env": "FBE_CELERY_BACKEND"}},
        name="celery",
    )
