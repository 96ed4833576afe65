"""The private core: pure, I/O-free code that both clients and every backend share.

Nothing here is public API (import from ``sparked_credits`` instead); nothing here does
I/O or imports a backend, a client or an edge (``tests/test_core_is_pure.py`` checks it).
"""
