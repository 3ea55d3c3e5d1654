"""A Sphinx extension for the book's build: at the end, print how long each notebook took to execute, and the
total (the build's budget is 300 s on 2 cores). Listed in ``_config.yml`` under ``sphinx.extra_extensions``."""

from __future__ import annotations


def report(app, exception) -> None:
    """Print each executed notebook's runtime (myst-nb's execution data) and their sum."""
    if exception is not None:
        return
    from myst_nb.sphinx_ import NbMetadataCollector

    times = {}
    for doc in sorted(app.env.found_docs):
        data = NbMetadataCollector.get_exec_data(app.env, doc)
        if data and data.get("runtime") is not None:
            times[doc] = data["runtime"]
    if not times:
        return
    width = max(len(doc) for doc in times)
    print("\nnotebook execution times:")
    for doc, seconds in times.items():
        print(f"  {doc:{width}s} {seconds:7.1f} s")
    print(f"  {'total':{width}s} {sum(times.values()):7.1f} s")


def setup(app) -> dict:
    app.connect("build-finished", report)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
