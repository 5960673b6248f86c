"""Test helpers shared by several test packages (real services, no mocks)."""
