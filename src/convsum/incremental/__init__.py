"""Incremental runs: what a published tree was built from, and what the next run adds to it.

    catalog.py   the state store beside a tree: the input files read and their staged rows, the
                 tree's facts and conversation tallies, and the journal of an unfinished update
    plan.py      full or incremental (`decide`); what an update derives again: its scope of
                 conversations, rows and days (`update_scope`)
    tallies.py   each conversation's numbers after a run: the catalog's, plus what changed

run.py reads: plan, stage the new files, scope, derive, publish, commit (`Catalog.record`).
"""
