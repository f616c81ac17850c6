"""Where things live on a device, in one place: the content-addressed cache and each run's job folders.

``cas/`` and ``bundles/`` outlive runs (staging pushes only what a device lacks); ``jobs/<run>.<session>/``
belongs to one session of one run and is removed when that session ends, whether it finished, failed or was
interrupted. Why the session in the name: a session's tether watchdog removes its folder, and kills every process
recorded in it, about a second after the session ends; a later session of the same run on the same device (a
resume, or the next look of an adaptive gate) must not share that folder, or the old watchdog kills its decoders.
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.session.spec import BundleRef, FileRef


@dataclass(frozen=True)
class Layout:
    workdir: str
    run_id: str
    session: str = ""
    """Names this session's folder apart from other sessions of the run; empty: the run's folder itself."""

    @property
    def run_dir(self) -> str:
        return f"{self.workdir}/{self.run_subdir}"

    @property
    def run_subdir(self) -> str:
        """The session's folder relative to the workdir (what ``prepare`` creates)."""
        return f"jobs/{self.run_id}" + (f".{self.session}" if self.session else "")

    def bundle_dir(self, bundle: BundleRef) -> str:
        return f"{self.workdir}/bundles/{bundle.digest}"

    def bundle_file(self, bundle: BundleRef, ref: FileRef) -> str:
        return f"{self.bundle_dir(bundle)}/{ref.name}"

    def bitstream(self, ref: FileRef) -> str:
        return f"{self.workdir}/cas/{ref.name}"

    def job_dir(self, index: int, attempt: int = 0) -> str:
        """A retry decodes in a folder of its own, so a decoder outliving a dead link cannot write into it."""
        return f"{self.run_dir}/{index}" + (f".{attempt}" if attempt else "")
