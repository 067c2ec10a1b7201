"""Offline tools and the `regrad` CLI: index, augment, train, encode, store, evaluate."""

__all__: list[str] = []
