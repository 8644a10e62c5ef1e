"""The benchmarks: the job's (job.py, make bench) and the read API's (api.py, make bench-api)."""
