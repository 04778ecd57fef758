"""Thin Dagster assets by layer: `staging` reads exports, `warehouse` publishes.

Each asset reads, calls the plain-Python domain in `consent/`, writes, and
reports metadata. Checks live in `checks.py`.
"""
