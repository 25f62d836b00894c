"""The one DNS resolver service every part of maild queries through (see resolver.py)."""

from maild.dns.resolver import Resolver, TempError

__all__ = ["Resolver", "TempError"]
