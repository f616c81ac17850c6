"""The farm in Prometheus: ``farm serve`` (exporter), ``farm run --pushgateway`` (push) and their shared schema.

One job per module: ``names`` (the metric schema), ``results`` (reads the store incrementally), ``collector``
(turns results and health into metric families), ``poller`` (live device health in the background), ``push``
(one run to a Pushgateway) and ``server`` (the HTTP endpoint). Decisions are in docs/prometheus.md.
"""
