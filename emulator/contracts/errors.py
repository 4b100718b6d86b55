"""The one exception of the contract machinery."""

from __future__ import annotations


class ContractError(Exception):
    """A contract is missing, unreadable or not usable (unknown name, bad ``$ref``...)."""


__all__ = ["ContractError"]
