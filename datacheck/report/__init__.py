"""Report consumers: the JSON document, CSV findings and (later) HTML. They render; they compute nothing."""

from datacheck.report.model import SCHEMA_VERSION, Report

__all__ = ["SCHEMA_VERSION", "Report"]
