"""Prometheus collectors: the store's results and the poller's device health as metric families.

Why custom collectors rather than Gauge objects: the values live in the store, not in this process, and a
Gauge keeps every label set it was ever given, so a key that became missing would keep exporting its old
value. A collector yields only what is there now: a missing measurement is absent, never 0.

Why families are cached and rebuilt per part: building 100k+ samples costs as much as rendering them, so the
store collector rebuilds only the parts a refresh changed (results when a run finishes, counters when jobs
land, run-level families when runs or gates change) and a scrape of an unchanged store only renders.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from farm.metrics import names
from farm.metrics.poller import Health
from farm.metrics.results import COMPLEXITY, RESULT_GAUGES, ResultIndex


def _gauge(spec: names.Spec) -> GaugeMetricFamily:
    return GaugeMetricFamily(spec.family_name, spec.help, labels=spec.labels)


class StoreCollector(Collector):
    """Exports a :class:`ResultIndex`. Safe for concurrent scrapes: refreshes are serialised."""

    def __init__(self, index: ResultIndex) -> None:
        self._index = index
        self._lock = threading.Lock()
        self._results: list[Metric] = []
        self._counters: list[Metric] = []
        self._runs: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            changes = self._index.refresh()
            if changes.results:
                self._results = self._result_families()
            if changes.counters:
                self._counters = self._counter_families()
            if changes.runs:
                self._runs = self._run_families()
            families = [*self._results, *self._counters, *self._runs]
        return families

    def _result_families(self) -> list[Metric]:
        """One gauge per result family (PSNR planes share one, told apart by their label), in names' order."""
        gauges = {spec.name: _gauge(spec) for spec in names.RESULT_SPECS if spec.kind == "gauge"}
        frames = SummaryMetricFamily(names.FRAME_SECONDS.name, names.FRAME_SECONDS.help, labels=names.RESULT_LABELS)
        quantile_name = names.FRAME_SECONDS.name
        for key, result in self._index.results.items():
            labels = list(key)
            for name, value in result.values.items():
                export = RESULT_GAUGES.get(name)
                if export is not None:
                    extra = [] if export.label is None else [export.label]
                    gauges[export.family.name].add_metric([*labels, *extra], value * export.scale)
            if result.frames is not None:
                base = dict(zip(names.RESULT_LABELS, key, strict=True))
                for q, seconds in zip(names.QUANTILES, result.frames.quantiles, strict=True):
                    frames.samples.append(Sample(quantile_name, {**base, "quantile": f"{q:g}"}, seconds))
                frames.add_metric(labels, result.frames.count, result.frames.total_s)
        return [frames if spec == names.FRAME_SECONDS else gauges[spec.name] for spec in names.RESULT_SPECS]

    def _counter_families(self) -> list[Metric]:
        energy, frames = (
            CounterMetricFamily(spec.family_name, spec.help, labels=spec.labels)
            for spec in (names.ENERGY_TOTAL, names.FRAMES_TOTAL)
        )
        for key, totals in self._index.totals.items():
            frames.add_metric(list(key), totals.frames)
            if totals.energy_j is not None:
                energy.add_metric(list(key), totals.energy_j)
        return [energy, frames]

    def _run_families(self) -> list[Metric]:
        level = self._index.run_level
        bd, last, duration = _gauge(names.BD_RATE), _gauge(names.LAST_RUN), _gauge(names.RUN_DURATION)
        passed, verdict, value = _gauge(names.GATE_PASSED), _gauge(names.GATE_VERDICT), _gauge(names.GATE_VALUE)
        for bd_key, ratio in level.bd_rates.items():
            bd.add_metric(list(bd_key), ratio)
        for last_key, finished in level.last_run.items():
            last.add_metric(list(last_key), finished)
        for run_key, seconds in level.durations.items():
            duration.add_metric(list(run_key), seconds)
        for gate in level.gates:
            labels = [gate.suite, gate.bundle, gate.gate, gate.scope]
            passed.add_metric(labels, 1.0 if gate.verdict in names.PASSING else 0.0)
            for state in names.VERDICTS:
                verdict.add_metric([*labels, state], 1.0 if gate.verdict == state else 0.0)
            if gate.value is not None:
                value.add_metric(labels, gate.value)
        decoder = {spec.name: _gauge(spec) for spec in names.DECODER_SPECS}
        for (metric, *labels), figure in sorted(level.complexity.items()):
            decoder[COMPLEXITY[metric].name].add_metric(labels, figure)
        return [bd, last, duration, passed, verdict, value, *decoder.values()]


DeviceInfo = tuple[str, str, str, bool]
"""(platform, target, transport kind, simulated sensors) of an inventory device."""


class HealthCollector(Collector):
    """Exports the poller's latest readings; a scrape only reads memory and never talks to a device."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Health]], devices: Mapping[str, DeviceInfo]) -> None:
        self._snapshot = snapshot
        self._devices = dict(devices)

    def collect(self) -> Iterable[Metric]:
        up, temp, battery = _gauge(names.DEVICE_UP), _gauge(names.DEVICE_TEMPERATURE), _gauge(names.DEVICE_BATTERY)
        charging, seen, info = _gauge(names.DEVICE_CHARGING), _gauge(names.DEVICE_LAST_SEEN), _gauge(names.DEVICE_INFO)
        for device, (platform, target, transport, simulated) in sorted(self._devices.items()):
            info.add_metric([device, platform, target, transport, "true" if simulated else "false"], 1.0)
        for device, health in sorted(self._snapshot().items()):
            up.add_metric([device], 1.0 if health.up else 0.0)
            if health.seen_at is not None:
                seen.add_metric([device], health.seen_at)
            if not health.up:
                continue  # a device that did not answer has no current reading: absent, not the old one
            if health.temperature_c is not None:
                temp.add_metric([device], health.temperature_c)
            if health.battery_ratio is not None:
                battery.add_metric([device], health.battery_ratio)
            if health.charging is not None:
                charging.add_metric([device], 1.0 if health.charging else 0.0)
        return [up, temp, battery, charging, seen, info]
