"""Where things live on a device, in one place: the content-addressed cache and each run's job folders.

``cas/`` and ``bundles/`` outlive runs (staging pushes only what a device lacks); ``jobs/<run>/`` belongs to one
run and is removed when its session ends, whether it finished, failed or was interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.session.spec import BundleRef, FileRef


@dataclass(frozen=True)
class Layout:
    workdir: str
    run_id: str

    @property
    def run_dir(self) -> str:
        return f"{self.workdir}/jobs/{self.run_id}"

    @property
    def run_subdir(self) -> str:
        """The run folder relative to the workdir (what ``prepare`` creates)."""
        return f"jobs/{self.run_id}"

    def bundle_dir(self, bundle: BundleRef) -> str:
        return f"{self.workdir}/bundles/{bundle.digest}"

    def bundle_file(self, bundle: BundleRef, ref: FileRef) -> str:
        return f"{self.bundle_dir(bundle)}/{ref.name}"

    def bitstream(self, ref: FileRef) -> str:
        return f"{self.workdir}/cas/{ref.name}"

    def job_dir(self, index: int, attempt: int = 0) -> str:
        """A retry decodes in a folder of its own, so a decoder outliving a dead link cannot write into it."""
        return f"{self.run_dir}/{index}" + (f".{attempt}" if attempt else "")
