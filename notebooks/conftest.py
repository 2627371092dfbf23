"""nbval settings for the notebooks.

stderr carries library warnings and progress-bar redraws that differ between machines, so it is
never compared; only `# NBVAL_CHECK_OUTPUT` cells' stdout and text results are (lax mode).
"""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
