"""toelab's lab: topology templates rendered, validated and built as namespace networks.

Importing the package imports nothing else, so `lab.errors` stays light; node kinds are in lab.kinds.
"""
