"""camaudit: is this image classifier looking at the thing, or at a shortcut?

The library behind the ``camaudit`` CLI and the Prefect flows in ``flows/``: CAM engine
(:mod:`auditors.cam`), regions (:mod:`auditors.regions`), metrics, aggregation, validation
and the HTML report.
"""

__version__ = "0.1.0"
