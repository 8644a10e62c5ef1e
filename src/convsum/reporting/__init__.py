"""Reporting: the queryable tables of a published run, SQL over them, named reports, HTML."""
