"""Bundle manifests (bundle.yaml): what a codec team hands the farm.

Templates are argv lists, never shell strings: each element is one argument and ``{name}`` placeholders are
substituted as whole text, so a file name can never become shell syntax on any device.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from farm.complexity import dims
from farm.config.source import load_yaml, validate
from farm.errors import InputError, Problem

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
ENCODER_VARS = frozenset({"input", "output", "rate", "width", "height", "fps", "bundle"})
DECODE_VARS = frozenset({"input", "output", "stats", "bundle"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(argv: tuple[str, ...], allowed: frozenset[str], runtime: tuple[str, ...]) -> None:
    if not argv:
        raise ValueError("argv must not be empty")
    for arg in argv:
        for name in PLACEHOLDER.findall(arg):
            if name not in allowed and name not in runtime:
                raise ValueError(
                    f"unknown placeholder {{{name}}} in {arg!r}; allowed: " + ", ".join(sorted(allowed | set(runtime)))
                )


def _relative_file(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or value in {"", "."}:
        raise ValueError(f"{value!r} must be a relative path inside the bundle")
    return value


class Encoder(Strict):
    """Runs on the host. ``{rate}`` is in kbit/s; runtime names (e.g. ``{ffmpeg}``) come from the host."""

    argv: tuple[str, ...]
    output_ext: str = Field(pattern=r"^[A-Za-z0-9]{1,8}$")
    requires: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    deterministic: bool = True
    """False when the same input and settings may give different bitstreams (e.g. multi-threaded rate control):
    then each run encodes anew and never reuses another run's bitstreams (docs/decoder-contract.md)."""

    @model_validator(mode="after")
    def _template(self) -> Encoder:
        _check_template(self.argv, ENCODER_VARS, self.requires)
        for f in self.files:
            _relative_file(f)
        # encodes are cached by the digests of `files`: a bundle file the encoder uses but does not list
        # would let a changed file reuse stale bitstreams
        for arg in self.argv:
            for used in re.findall(r"\{bundle\}/([^\s:;,=]+)", arg):
                if used not in self.files:
                    raise ValueError(f"encoder argv uses {{bundle}}/{used}; list it in encoder.files")
        return self


class Model(Strict):
    """One decoder model file, and the input shapes it runs with for one decoded frame (docs/complexity.md).

    ``inputs`` gives a graph input's shape, each dimension an integer or an expression in the frame's ``W`` and
    ``H`` (``"H/16"``); inputs not named keep the shape the model declares. ``resolution`` ([width, height]) pins
    the frame size the model runs at (a model exported with fixed shapes, or a tile): its MACs per pixel are
    then counted over that size. ``runs_per_frame``: how often one decoded frame runs it (a tiled decoder: tiles).
    """

    file: str
    inputs: dict[str, tuple[int | str, ...]] = Field(default_factory=dict)
    resolution: tuple[Annotated[int, Field(gt=0, le=16384)], Annotated[int, Field(gt=0, le=16384)]] | None = None
    runs_per_frame: float = Field(default=1.0, gt=0, le=100_000)

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        return _relative_file(value)

    @field_validator("inputs")
    @classmethod
    def _dims(cls, value: dict[str, tuple[int | str, ...]]) -> dict[str, tuple[int | str, ...]]:
        for name, shape in value.items():
            for i, dim in enumerate(shape):
                try:
                    dims.check(dim)
                except dims.DimError as exc:
                    raise ValueError(f"inputs.{name}[{i}]: {exc}") from None
        return value


class Target(Strict):
    """One device target: either an executable decode (POSIX devices) or an app (iOS)."""

    files: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    decode: tuple[str, ...] | None = None
    app: str | None = None
    bundle_id: str | None = None
    models: tuple[Model, ...] | None = None  # this target's decoder models, instead of the bundle's 'models'

    @field_validator("files")
    @classmethod
    def _files(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for f in value:
            _relative_file(f)
        return value

    @model_validator(mode="after")
    def _kind(self) -> Target:
        if self.app is not None:
            _relative_file(self.app)
            if self.bundle_id is None:
                raise ValueError("an app target needs 'bundle_id'")
        elif self.decode is None:
            raise ValueError("a target needs 'decode' (argv template) or 'app'")
        if self.decode is not None:
            _check_template(self.decode, DECODE_VARS, self.requires)
        return self


class Manifest(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    version: str = Field(min_length=1, max_length=64)
    codec: str = Field(min_length=1)
    description: str = ""
    encoder: Encoder
    targets: dict[str, Target] = Field(min_length=1)
    models: tuple[Model, ...] = ()  # decoder models of every target that lists none itself (complexity)

    @field_validator("targets")
    @classmethod
    def _target_names(cls, value: dict[str, Target]) -> dict[str, Target]:
        for name in value:
            plat, _, arch = name.partition("-")
            if plat not in {"linux", "android", "ios"} or not arch:
                raise ValueError(f"target {name!r} is not '<platform>-<arch>' (e.g. linux-x86_64)")
        return value

    def referenced_files(self) -> set[str]:
        files = set(self.encoder.files)
        for target in self.targets.values():
            files.update(target.files)
            if target.app:
                files.add(target.app)
            files.update(m.file for m in target.models or ())
        files.update(m.file for m in self.models)
        return files

    def models_for(self, target: str) -> tuple[Model, ...]:
        """The decoder models a device of ``target`` runs: the target's own list, else the bundle's."""
        own = self.targets[target].models if target in self.targets else None
        return own if own is not None else self.models


def load_manifest(path: Path, display: str | None = None) -> Manifest:
    """Load ``bundle.yaml``; every referenced file must exist next to it."""
    doc = load_yaml(path, display)
    if not isinstance(doc.data, dict):
        raise InputError([Problem(doc.file, 1, "", "expected a mapping")])
    manifest = validate(Manifest, doc)
    problems = []
    for f in sorted(manifest.referenced_files()):
        if not (path.parent / f).is_file():
            loc = _locate_file(doc.data, f)
            problems.append(doc.problem(loc, f"file {f!r} is not in the bundle"))
    if problems:
        raise InputError(problems)
    return manifest


def _locate_file(data: object, name: str) -> tuple[str | int, ...]:
    if isinstance(data, dict):
        enc = data.get("encoder")
        if isinstance(enc, dict) and name in (enc.get("files") or []):
            return ("encoder", "files", list(enc["files"]).index(name))
        for tname, target in (data.get("targets") or {}).items():
            if isinstance(target, dict):
                if name in (target.get("files") or []):
                    return ("targets", tname, "files", list(target["files"]).index(name))
                if target.get("app") == name:
                    return ("targets", tname, "app")
                if (where := _locate_model(target.get("models"), name)) is not None:
                    return ("targets", tname, "models", where, "file")
        if (where := _locate_model(data.get("models"), name)) is not None:
            return ("models", where, "file")
    return ()


def _locate_model(models: object, name: str) -> int | None:
    if isinstance(models, list):
        for i, model in enumerate(models):
            if isinstance(model, dict) and model.get("file") == name:
                return i
    return None


def substitute(argv: tuple[str, ...], values: dict[str, str]) -> list[str]:
    """Replace ``{name}`` in each argument; an unknown name is an error, never left in place."""

    def one(arg: str) -> str:
        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise InputError(f"template placeholder {{{name}}} has no value here")
            return values[name]

        return PLACEHOLDER.sub(repl, arg)

    return [one(a) for a in argv]
