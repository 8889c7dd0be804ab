"""Tally pacing: the read side for dashboards and ad servers — spend per hour, pacing, forecasts, alerts."""
