"""Airflow 2.x DAG for the nightly convsum run: one BashOperator running the job's command.

Install: copy this file into the scheduler's dags folder; the workers need the command and the
configuration at the same paths (see jobs/README.md).

Exit codes, as Airflow sees them: any nonzero exit fails the try and Airflow retries it after
`retry_delay`, whatever the code. That is what exit 75 (another run holds the output root's
lock) wants. Exit 1 (bad input, or output not writable) and exit 2 (bad command line or config)
are retried too, harmlessly: bad input is found while reading, before anything is written, so
each try fails fast and publishes nothing, and the task ends failed after the last retry. A
failed task needs a human: read the task log, fix the input or the config, then clear the task.
`skip_on_exit_code=75` is not used: it would mark a night that published nothing as skipped,
without retrying.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator

COMMAND = "/opt/convsum/.venv/bin/convsum run --config /etc/convsum/nightly.toml"

with DAG(
    dag_id="convsum_nightly",
    description="Publish the static conversations API from the SMS logs",
    # 02:30 UTC, as the systemd timer: the logs' times are UTC.
    schedule="30 2 * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    # A run reads every input file not read yet, so a missed night needs no backfill.
    catchup=False,
    # Runs of one output root must not overlap (the lock would make the second exit 75).
    max_active_runs=1,
    default_args={
        "retries": 4,
        "retry_delay": timedelta(minutes=15),
        # A hung run is killed; the previous tree stays served.
        "execution_timeout": timedelta(hours=4),
    },
    tags=["convsum"],
) as dag:
    BashOperator(task_id="convsum_run", bash_command=COMMAND)
