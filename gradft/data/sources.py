"""Where task data comes from, said the same way for every loader: the environment variable or override that points
a data root elsewhere (named in every "not found" error), and the HF hub read without its progress bars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# data config key -> the environment variable that sets it (conf/config.yaml `data:`), named in errors
ROOT_ENV = {"superglue_root": "GRADFT_SUPERGLUE", "fewglue_root": "GRADFT_FEWGLUE", "domain_root": "GRADFT_DOMAIN"}


def set_root_hint(key: str, placeholder: str) -> str:
    """How to point a data root elsewhere: the environment variable or the override."""
    return f"set {ROOT_ENV[key]}={placeholder} or pass data.{key}={placeholder}"


@contextmanager
def quiet_datasets() -> Iterator:
    import datasets  # only the hub path needs it (a second of import)

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
