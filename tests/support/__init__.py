"""Reusable test infrastructure: real servers, real workers, no mocks."""
