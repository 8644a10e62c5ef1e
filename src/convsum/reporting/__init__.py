"""Reporting: the queryable tables of a published run, SQL over them, named reports, HTML."""

# The output formats (reporting/output.py writes them), here so that the command line's options
# can name them without importing the writers.
FORMATS = ("table", "csv", "tsv", "json", "jsonl", "markdown", "parquet")

# The named reports (reporting/reports.py defines them, in this order, and checks that it does),
# here so that shell completion can offer them without importing the query engines.
REPORT_NAMES = (
    "overview", "outcomes", "failures", "operators", "latency", "stuck", "volume", "top", "quality"
)  # fmt: skip
