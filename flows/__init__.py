"""Prefect flows of camaudit."""
