"""Helpers the test modules share: data sets, names, trees, processes, nginx, buckets, charts,
the pure-Python reference, the Hypothesis strategies and the local S3 server."""
