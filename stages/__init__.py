"""The pipeline's stage scripts, one per dvc.yaml stage.

dvc.yaml runs them as modules (`python -m stages.train ...`) from the repository root, so
that `import lstmlm` finds the lstmlm/ beside them — in a queued experiment's temporary
copy too — rather than whichever checkout the package was installed from.
"""
