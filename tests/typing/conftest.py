"""The files of pass/ and fail/ are user code for mypy to check, not modules to import."""

collect_ignore_glob = ["pass/*.py", "fail/*.py"]
