"""Domains, users, aliases and recipient resolution."""

from __future__ import annotations

import pytest

from maild.store import Store
from maild.store.types import DomainNotFound, StoreError, UserExists


def test_resolve_users_aliases_plus_and_catch_all(store: Store) -> None:
    store.alias_add("info@example.test", ["alice@example.test", "bob@example.test"])
    store.alias_add("postmaster@example.test", ["info@example.test"])
    assert store.resolve_recipient("Alice@Example.TEST") == ["alice@example.test"]
    assert store.resolve_recipient("alice+lists@example.test") == ["alice@example.test"]
    assert store.resolve_recipient("postmaster@example.test") == ["alice@example.test", "bob@example.test"]
    assert store.resolve_recipient("nobody@example.test") == []
    assert store.resolve_recipient("alice@other.example") is None
    store.domain_set_catch_all("example.test", "bob@example.test")
    assert store.resolve_recipient("nobody@example.test") == ["bob@example.test"]


def test_alias_loop_resolves_to_nothing(store: Store) -> None:
    store.alias_add("a@example.test", ["b@example.test"])
    store.alias_add("b@example.test", ["a@example.test"])
    assert store.resolve_recipient("a@example.test") == []


def test_addresses_of_includes_own_aliases_only(store: Store) -> None:
    store.alias_add("al@example.test", ["alice@example.test"])
    store.alias_add("team@example.test", ["alice@example.test", "bob@example.test"])
    assert store.addresses_of("alice@example.test") == {"alice@example.test", "al@example.test"}


def test_user_rules(store: Store) -> None:
    with pytest.raises(UserExists):
        store.user_add("ALICE@example.test", "h")
    with pytest.raises(DomainNotFound):
        store.user_add("x@unknown.test", "h")
    with pytest.raises(StoreError):
        store.domain_remove("example.test")  # still has users
    store.alias_add("al@example.test", ["alice@example.test"])
    with pytest.raises(UserExists):
        store.user_add("al@example.test", "h")


def test_users_spread_over_shards(store: Store) -> None:
    for i in range(20):
        store.user_add(f"u{i}@example.test", "h")
    assert {u.shard for u in store.users()} == {0, 1}
