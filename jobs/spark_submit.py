"""The convsum job as a Spark application, for clusters that run jobs with `spark-submit`.

    PYSPARK_PYTHON=./environment/bin/python spark-submit --master yarn --deploy-mode client \
        --archives convsum-env.tar.gz#environment \
        jobs/spark_submit.py --config /etc/convsum/nightly.toml --engine spark

The arguments are those of `convsum run`, and so are the exit codes. The session is
spark-submit's: its master and its --conf settings apply, and the TOML file's [spark] table adds
to them. The driver must run where the output root is (client deploy mode), and every executor
must see the output root at the same path (see docs/engines.md: Spark).
"""

import sys

from convsum.cli import cli

if __name__ == "__main__":
    cli(["run", *sys.argv[1:]], prog_name="convsum")
