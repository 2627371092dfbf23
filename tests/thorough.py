"""How much of the costly checking a test run repeats.

`make test` runs every check once; `MINIDIFF_THOROUGH=1 make test` repeats the costly ones -- the shipped
weights' bars on x_T seeds 1 and 2 as well as 0, every quick notebook's student edition executed, every quick
notebook driven live in the browser -- which is what a release, or a change to a model, should run.
"""
import os

THOROUGH = os.environ.get("MINIDIFF_THOROUGH", "0") == "1"
