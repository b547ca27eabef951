"""Unit tests of the domain: the run policy and the session engine, with in-memory fakes."""
