"""How figures are shown to people, the same in the notifications and the report."""

from __future__ import annotations


def percent(count: int, tier: int) -> str:
    """Utilization as a short percentage, rounded down so 79.9% never shows as 80% (nor
    100.2% as 100%): a shown figure reaches a threshold only when the count does."""
    tenths = (1000 * count) // tier
    return f"{tenths // 10}%" if tenths % 10 == 0 else f"{tenths // 10}.{tenths % 10}%"
