"""The QEMU boards' image recipe: its digest follows what goes into the image, and a cached image is reused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from farm.config.inventory import Device
from farm.sim.qemu import image as image_mod
from farm.sim.qemu import runtime as runtime_mod
from farm.sim.qemu.board import QemuBoard, qemu_argv
from farm.sim.qemu.image import MANIFEST, Image, ensure_image
from farm.sim.qemu.recipe import CACHE_ENV, Recipe, cache_root, image_dir
from farm.sim.qemu.runtime import (
    NO_AARCH64_WHEEL,
    ORT_PYTHON,
    RuntimeDisk,
    RuntimePins,
    ensure_runtime,
    runtime_dir,
)  # fmt: skip


def test_the_digest_is_stable_and_follows_every_part_of_the_recipe() -> None:
    base = Recipe()
    assert base.digest() == Recipe().digest()
    changed = [
        dataclasses.replace(base, packages=(*base.packages, "htop")),
        dataclasses.replace(base, ffmpeg_wheel="imageio-ffmpeg==0.5.1"),
        dataclasses.replace(base, files=((*base.files[:-1], ("etc/hostname", "other\n", 0o644)))),
        dataclasses.replace(base, files=((*base.files[:-1], (*base.files[-1][:2], 0o600)))),
        dataclasses.replace(base, suite="trixie"),
        dataclasses.replace(base, revision=base.revision + 1),
    ]
    digests = {r.digest() for r in changed}
    assert len(digests) == len(changed) and base.digest() not in digests


def test_the_ffmpeg_on_the_board_is_the_hosts_imageio_ffmpeg_version() -> None:
    import imageio_ffmpeg

    assert Recipe().ffmpeg_wheel == f"imageio-ffmpeg=={imageio_ffmpeg.__version__}"


def test_the_cache_is_under_the_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert cache_root() == tmp_path / "cache"
    assert image_dir(Recipe()) == tmp_path / "cache" / Recipe().digest()
    monkeypatch.delenv(CACHE_ENV)
    assert cache_root() == Path.home() / ".cache" / "codec-farm" / "qemu"


def test_a_cached_image_is_reused_and_another_recipe_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    recipe = Recipe()
    cached = image_dir(recipe)
    cached.mkdir(parents=True)
    (cached / MANIFEST).write_text(json.dumps({"digest": recipe.digest()}))
    builds: list[Path] = []

    def build(recipe: Recipe, work: Path, say: object) -> tuple[Path, Path, Path]:
        builds.append(work)
        raise RuntimeError("stop before debootstrap")

    monkeypatch.setattr(image_mod, "build", build)
    found = ensure_image(recipe)
    assert (found.dir, found.build_s, found.base) == (cached, None, cached / "base.qcow2")
    assert builds == []
    other = dataclasses.replace(recipe, packages=(*recipe.packages, "htop"))
    with pytest.raises(RuntimeError, match="stop before debootstrap"):
        ensure_image(other)
    assert len(builds) == 1 and builds[0].parent == tmp_path
    assert not builds[0].exists(), "a failed build leaves no half-built directory"
    assert not image_dir(other).exists()


def test_the_inventory_entry_is_an_emulated_aarch64_board_without_a_power_meter(tmp_path: Path) -> None:
    img = Image(tmp_path, tmp_path / "base.qcow2", tmp_path / "vmlinuz", tmp_path / "initrd.img", "d", None)
    key = tmp_path / "id_ed25519"
    board = QemuBoard("qemu-1", tmp_path / "qemu-1", img, key, port=2222)
    entry = board.inventory_entry(tmp_path / "known_hosts")
    device = Device.model_validate(yaml.safe_load(yaml.safe_dump(entry)))
    assert device.target == "linux-aarch64" and device.emulated
    assert device.power.meter == "none" and device.thermal.zones == ()
    assert device.runtime == {"python": "/usr/bin/python3", "ffmpeg": "/opt/farm/ffmpeg"}
    argv = qemu_argv(img, tmp_path / "o.qcow2", tmp_path / "seed.img", 2222, tmp_path / "c.log", tmp_path / "q")
    assert argv[0] == "qemu-system-aarch64" and "tcg,thread=multi" in argv and "cortex-a72" in argv
    assert any(a.startswith("user,") and "hostfwd=tcp:127.0.0.1:2222-:22" in a for a in argv)


def test_the_cross_isa_suite_is_smoke_with_fps_gated_on_the_host_only() -> None:
    from farm.config.suite import load_suite

    root = Path(__file__).resolve().parent.parent / "suites"
    smoke, cross = load_suite(root / "smoke.yaml"), load_suite(root / "smoke-cross-isa.yaml")
    assert cross.sequences == smoke.sequences and cross.rates_kbps == smoke.rates_kbps
    assert cross.repeats == smoke.repeats and cross.metrics == smoke.metrics
    pairs = list(zip(smoke.gates, cross.gates, strict=True))
    for a, b in pairs:
        if a.metric == "fps.p50":
            assert (a.scope, b.scope) == ("each", "tag:host") and (a.op, a.value) == (b.op, b.value)
        else:
            assert a == b


# -- the boards' ONNX Runtime disk --------------------------------------------------------------------------


def test_the_runtime_pins_are_the_hosts_versions_and_name_the_cache_entry() -> None:
    import numpy
    import onnxruntime

    pins = RuntimePins()
    assert pins.packages == (f"onnxruntime=={onnxruntime.__version__}", f"numpy=={numpy.__version__}")
    assert "constriction" in NO_AARCH64_WHEEL and not any(p.startswith("constriction") for p in pins.packages)
    assert pins.digest() == RuntimePins().digest()
    changed = [dataclasses.replace(pins, packages=("onnxruntime==1.0.0",)), dataclasses.replace(pins, revision=9),
               dataclasses.replace(pins, python_version="3.12")]  # fmt: skip
    assert len({p.digest() for p in changed} | {pins.digest()}) == 4


def test_a_cached_runtime_disk_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    pins = RuntimePins()
    cached = runtime_dir(pins)
    cached.mkdir(parents=True)
    (cached / runtime_mod.MANIFEST).write_text("{}")
    builds: list[Path] = []

    def build(pins: RuntimePins, work: Path) -> Path:
        builds.append(work)
        raise RuntimeError("stop before pip")

    monkeypatch.setattr(runtime_mod, "build", build)
    found = ensure_runtime(pins)
    assert (found.path, found.build_s, builds) == (cached / "runtime.img", None, [])
    with pytest.raises(RuntimeError, match="stop before pip"):
        ensure_runtime(dataclasses.replace(pins, revision=pins.revision + 1))
    assert len(builds) == 1 and not builds[0].exists(), "a failed build leaves no half-built directory"


def test_a_board_with_the_runtime_disk_attaches_it_read_only_and_names_its_interpreter(tmp_path: Path) -> None:
    img = Image(tmp_path, tmp_path / "base.qcow2", tmp_path / "vmlinuz", tmp_path / "initrd.img", "d", None)
    disk = RuntimeDisk(tmp_path / "runtime.img", "r", ("onnxruntime==1",), None)
    board = QemuBoard("qemu-1", tmp_path / "qemu-1", img, tmp_path / "key", port=2222, runtime=disk)
    device = Device.model_validate(yaml.safe_load(yaml.safe_dump(board.inventory_entry(tmp_path / "kh"))))
    assert device.runtime["onnxruntime"] == ORT_PYTHON == "/opt/farm-runtimes/bin/python3-ort"
    argv = qemu_argv(img, tmp_path / "o", tmp_path / "s", 2222, tmp_path / "c", tmp_path / "q", disk.path)
    assert f"if=none,id=runtime,format=raw,readonly=on,file={disk.path}" in argv
    assert "/opt/farm-runtimes/site" in RuntimePins().wrapper and "exec /usr/bin/python3" in RuntimePins().wrapper


def test_boards_boot_without_onnxruntime_when_the_runtime_disk_cannot_be_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from farm.sim import fleet
    from farm.sim.sshboard import SimError

    img = Image(tmp_path, tmp_path / "base.qcow2", tmp_path / "vmlinuz", tmp_path / "initrd.img", "d", None)
    monkeypatch.setattr(image_mod, "ensure_image", lambda **_: img)

    def offline(**_: object) -> RuntimeDisk:
        raise SimError("pip: no network")

    monkeypatch.setattr(runtime_mod, "ensure_runtime", offline)
    [board] = fleet._qemu_boards(1, tmp_path, tmp_path / "id_ed25519", exit_with_parent=False)
    assert board.runtime is None and "onnxruntime" not in board.inventory_entry(tmp_path / "kh")["runtime"]
    assert "no onnxruntime runtime: pip: no network" in capsys.readouterr().out


def test_a_cached_build_appears_whole_or_not_at_all_and_a_failed_one_keeps_its_log(tmp_path: Path) -> None:
    from farm.sim.qemu.cached import build_in_place
    from farm.sim.sshboard import SimError

    def good(work: Path) -> None:
        (work / "disk.img").write_bytes(b"x")

    out = tmp_path / "cache" / "abc"
    seconds = build_in_place(out, "m.json", "abc", ("pins", {"numpy": "2"}), good)
    record = json.loads((out / "m.json").read_text())
    assert (out / "disk.img").read_bytes() == b"x" and seconds >= 0
    assert (record["digest"], record["pins"], record["build_s"]) == ("abc", {"numpy": "2"}, round(seconds, 1))

    def bad(work: Path) -> None:
        (work / "build.log").write_text("pip: no matching distribution\n")
        raise SimError("pip failed")

    with pytest.raises(SimError, match="pip failed"):
        build_in_place(tmp_path / "cache" / "def", "m.json", "def", ("pins", {}), bad)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["abc", "def.failed.log"]
    assert "no matching distribution" in (tmp_path / "cache" / "def.failed.log").read_text()
