"""`/metrics` values are exact: byte counters and Unix times in full, floats with every
digit (Prometheus computes rates from them; 6 significant digits made them wrong)."""

from __future__ import annotations

from cairn.appliance.metrics import number


def test_samples_are_printed_exactly() -> None:
    assert number(1796010123.0) == "1796010123"
    assert number(float(70_242_573_123)) == "70242573123"
    assert number(1796010123.456789) == "1796010123.456789"
    assert float(number(0.1 + 0.2)) == 0.1 + 0.2
    assert number(0) == "0"
