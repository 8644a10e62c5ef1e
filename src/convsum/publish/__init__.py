"""Publishing: safe paths, page and summary files, manifest, run report, web-server config."""
