"""The embedded demo: synthetic posters (``posters``), two small CNNs (``training``), cached assets (``assets``).

``auditors.demo:build_demo_cnn`` is the factory that ``configs/demo.yaml`` names; keep it importable here.
"""

from auditors.demo.training import build_demo_cnn

__all__ = ["build_demo_cnn"]
