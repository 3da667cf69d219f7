"""Apache Superset engine spec for kappa.

Superset reaches kappa through flightsql-dbapi's SQLAlchemy dialect (`datafusion://HOST:PORT`) and,
without a spec for it, through the generic one, which has no time grains: a time-series chart could
only plot raw timestamps. This spec tells Superset the SQL kappa speaks (DataFusion's): `date_trunc`
for time grains, and timestamp literals for time-range filters, which kappa turns into range scans
of the Kafka log (a dashboard's "last hour" reads the last hour). Install it beside Superset
(`pip install deploy/superset`); Superset finds it through its `superset.db_engine_specs` entry
point.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import types

from superset.constants import TimeGrain
from superset.db_engine_specs.base import BaseEngineSpec


def _trunc(unit: str) -> str:
    return f"date_trunc('{unit}', {{col}})"


class KappaEngineSpec(BaseEngineSpec):
    """kappa (Arrow Flight SQL over Kafka topics and their Delta Lake history)."""

    engine = "datafusion"
    engine_name = "kappa (Arrow Flight SQL)"
    default_driver = "flightsql"
    sqlalchemy_uri_placeholder = "datafusion://host:50051?insecure=True"

    _time_grain_expressions = {
        None: "{col}",
        TimeGrain.SECOND: _trunc("second"),
        TimeGrain.MINUTE: _trunc("minute"),
        TimeGrain.FIVE_MINUTES: "date_bin(INTERVAL '5 minutes', {col})",
        TimeGrain.FIFTEEN_MINUTES: "date_bin(INTERVAL '15 minutes', {col})",
        TimeGrain.HOUR: _trunc("hour"),
        TimeGrain.DAY: _trunc("day"),
        TimeGrain.WEEK: _trunc("week"),
        TimeGrain.MONTH: _trunc("month"),
        TimeGrain.QUARTER: _trunc("quarter"),
        TimeGrain.YEAR: _trunc("year"),
    }

    @classmethod
    def epoch_to_dttm(cls) -> str:
        return "to_timestamp_seconds({col})"

    @classmethod
    def epoch_ms_to_dttm(cls) -> str:
        return "to_timestamp_millis({col})"

    @classmethod
    def convert_dttm(cls, target_type: str, dttm: datetime, db_extra: dict[str, Any] | None = None) -> str | None:
        """A literal for a time-range filter on a column of `target_type`. kappa's timestamps are
        UTC; Superset's range bounds are naive UTC datetimes."""
        sqla_type = cls.get_sqla_column_type(target_type)
        if isinstance(sqla_type, types.Date) and not isinstance(sqla_type, types.DateTime):
            return f"DATE '{dttm.date().isoformat()}'"
        if isinstance(sqla_type, (types.DateTime, types.TIMESTAMP)):
            return f"TIMESTAMP '{dttm.isoformat(sep=' ', timespec='microseconds')}'"
        return None
