"""The public surface of each package is what its __all__ says, and every name in it exists."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["loa.protocol", "loa.codecs"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_are_unique(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported))
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == []


@pytest.mark.parametrize("name", PACKAGES)
def test_no_public_name_is_left_out(name: str) -> None:
    """Public names bound in the package namespace are exported (submodules and dunders aside)."""
    module = importlib.import_module(name)
    public = {
        n for n, v in vars(module).items()
        if not n.startswith("_") and not isinstance(v, type(importlib)) and n not in {"annotations"}
    }
    assert public - set(module.__all__) == set()


def test_protocol_errors_are_one_hierarchy() -> None:
    from loa import protocol

    for n in protocol.__all__:
        obj = getattr(protocol, n)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, protocol.ProtocolError)
