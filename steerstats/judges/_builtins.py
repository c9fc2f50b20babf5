"""Imports the built-in judge modules so their decorators register them."""
