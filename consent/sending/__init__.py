"""Sending: the pre-send gate that decides an audience."""
