"""Scale-out: the matrix as a Slurm job array (plus a dependent merge job) or a Kubernetes
Indexed Job (plus a merge Job), one ``--shard i/n`` per array task or completion index.

Layout under the results folder ``R`` (shared by every node):

* ``R/shards/shard-<i>-of-<n>/``: shard i's own store (resumable: re-running the shard skips
  every cell whose latest row is ok, so a re-submission loses and repeats nothing);
* ``R/merged/``: the union of the shard stores (``slidesparse merge``; merging again adds
  only new rows, identical rows are stored once);
* ``R/reports/``: the reports of the merged store (en + zh);
* ``R/slurm/``: the scripts and the jobs' logs.

A shard whose run-matrix exits 1 (finished, with failed cells) counts as done for the
scheduler: the merge and the report still run, and the failures are in the store.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from slidesparse.core.errors import UserError


@dataclass(frozen=True)
class ShardJob:
    """One matrix, split into ``shards`` array tasks that write under ``results``."""

    preset: str
    shards: int
    results: Path
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    partition: str | None = None
    time: str | None = None
    python: str = sys.executable
    workdir: Path = Path(".")
    job_name: str | None = None

    def __post_init__(self):
        if self.shards < 1:
            raise UserError(f"--shards {self.shards}: give a positive number of shards")
        if self.gpus_per_task < 0 or self.cpus_per_task < 1:
            raise UserError("--gpus-per-task must be >= 0 and --cpus-per-task >= 1")

    @property
    def name(self) -> str:
        return self.job_name or f"slidesparse-{Path(self.preset).stem}"

    def shard_dir(self, index: int | str) -> str:
        return f"{self.results}/shards/shard-{index}-of-{self.shards}"

    def run_matrix(self, index: str) -> str:
        """The shard's run-matrix command line (``index``: a shell expression)."""
        gpus = " --gpus all" if self.gpus_per_task else ""
        return (
            f"{shlex.quote(self.python)} -m slidesparse run-matrix "
            f'--preset {shlex.quote(self.preset)} --shard "{index}/{self.shards}" '
            f'--results "{self.shard_dir(index)}" --progress plain{gpus}'
        )

    def merge_and_report(self) -> str:
        """Shell lines that merge the shard stores that exist and render the reports."""
        py, r = shlex.quote(self.python), shlex.quote(str(self.results))
        return "\n".join(
            [
                "shopt -s nullglob",
                f"shards=({r}/shards/shard-*-of-{self.shards})",
                'if [ "${#shards[@]}" -eq 0 ]; then echo "no shard stores yet" >&2; exit 1; fi',
                f'{py} -m slidesparse merge "${{shards[@]}}" -o {r}/merged',
                f"{py} -m slidesparse report {r}/merged --out {r}/reports --lang en",
                f"{py} -m slidesparse report {r}/merged --out {r}/reports --lang zh",
            ]
        )


def _absolute(job: ShardJob) -> ShardJob:
    """Paths the jobs see from another working directory: all absolute."""
    preset = job.preset
    if Path(preset).suffix in (".yaml", ".yml") or Path(preset).exists():
        if not Path(preset).is_file():
            raise UserError(f"--preset {preset}: no such matrix file")
        preset = str(Path(preset).resolve())
    return ShardJob(
        **{
            **job.__dict__,
            "preset": preset,
            "results": job.results.resolve(),
            "workdir": job.workdir.resolve(),
        }
    )


# ------------------------------------------------------------------------------ Slurm


def slurm_scripts(job: ShardJob) -> tuple[str, str]:
    """(array script, merge script) for sbatch."""
    job = _absolute(job)
    logs = f"{job.results}/slurm/logs"
    head = ["#!/bin/bash", f"#SBATCH --job-name={job.name}"]
    opts = [f"#SBATCH --partition={job.partition}"] if job.partition else []
    opts += [f"#SBATCH --time={job.time}"] if job.time else []
    array = [
        *head,
        f"#SBATCH --array=0-{job.shards - 1}",
        f"#SBATCH --output={logs}/%x-%A_%a.out",
        f"#SBATCH --cpus-per-task={job.cpus_per_task}",
        *([f"#SBATCH --gres=gpu:{job.gpus_per_task}"] if job.gpus_per_task else []),
        *opts,
        "#SBATCH --requeue",
        "",
        "set -u",
        f"cd {shlex.quote(str(job.workdir))}",
        job.run_matrix("$SLURM_ARRAY_TASK_ID"),
        "status=$?",
        "# 1: the shard finished with failed cells (recorded); not a reason to requeue",
        'if [ "$status" -eq 1 ]; then exit 0; fi',
        'exit "$status"',
        "",
    ]
    merge = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job.name}-merge",
        f"#SBATCH --output={logs}/%x-%j.out",
        "#SBATCH --cpus-per-task=1",
        *opts,
        "",
        "set -eu",
        f"cd {shlex.quote(str(job.workdir))}",
        job.merge_and_report(),
        "",
    ]
    return "\n".join(array), "\n".join(merge)


def _sbatch(args: list[str]) -> str:
    try:
        p = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError(
            "sbatch not found: run this on a Slurm login node (or --dry-run to see the scripts)"
        ) from None
    if p.returncode != 0:
        first = (p.stderr or p.stdout).strip().splitlines()
        raise UserError(f"sbatch failed: {first[0] if first else f'exit {p.returncode}'}")
    return p.stdout.strip().split(";")[0]


def submit_slurm(job: ShardJob) -> tuple[str, str, Path]:
    """Write both scripts under ``results/slurm`` and submit them; (array id, merge id, dir)."""
    from slidesparse.core.atomic import atomic_write_text

    job = _absolute(job)
    array, merge = slurm_scripts(job)
    folder = job.results / "slurm"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "array.sbatch", array)
    atomic_write_text(folder / "merge.sbatch", merge)
    array_id = _sbatch([str(folder / "array.sbatch")])
    merge_id = _sbatch([f"--dependency=afterany:{array_id}", str(folder / "merge.sbatch")])
    return array_id, merge_id, folder


# ------------------------------------------------------------------------- Kubernetes


def k8s_manifests(
    job: ShardJob, image: str, claim: str, mount: str = "/results", namespace: str | None = None
) -> list[dict]:
    """An Indexed Job of ``shards`` completions (``JOB_COMPLETION_INDEX`` -> ``--shard``) and
    a merge Job, both mounting the PersistentVolumeClaim ``claim`` at ``mount``. Kubernetes
    has no dependency between Jobs: apply the merge Job once the array Job completed (``kubectl
    wait --for=condition=complete job/<name>``)."""
    shard_job = ShardJob(
        **{**job.__dict__, "results": Path(mount), "python": "python3", "workdir": Path("/")}
    )
    meta = {"namespace": namespace} if namespace else {}
    name = re.sub(r"[^a-z0-9-]+", "-", job.name.lower()).strip("-")[:50] or "slidesparse"
    volume = [{"name": "results", "persistentVolumeClaim": {"claimName": claim}}]
    mounts = [{"name": "results", "mountPath": mount}]
    resources = {"limits": {"nvidia.com/gpu": job.gpus_per_task}} if job.gpus_per_task else {}
    run = shard_job.run_matrix("${JOB_COMPLETION_INDEX}")  # set by Kubernetes per index
    container = {
        "name": "shard",
        "image": image,
        "command": ["/bin/bash", "-c", f'{run}; s=$?; [ "$s" -eq 1 ] && exit 0; exit "$s"'],
        "volumeMounts": mounts,
        "resources": resources,
    }
    array = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, **meta},
        "spec": {
            "completionMode": "Indexed",
            "completions": job.shards,
            "parallelism": job.shards,
            "backoffLimitPerIndex": 2,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [container], "volumes": volume}
            },
        },
    }
    merge_container = {
        "name": "merge",
        "image": image,
        "command": ["/bin/bash", "-c", "set -eu\n" + shard_job.merge_and_report()],
        "volumeMounts": mounts,
    }
    merge = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-merge", **meta},
        "spec": {
            "backoffLimit": 1,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [merge_container],
                    "volumes": volume,
                }
            },
        },
    }
    return [array, merge]
