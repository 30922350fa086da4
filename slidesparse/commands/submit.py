"""``submit slurm`` / ``submit k8s``: the matrix as a Slurm job array or a Kubernetes Indexed
Job, one shard per task, each writing its own store, then a merge and the reports."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("submit")
def submit() -> None:
    """Run a matrix on a cluster: one shard per array task, merged and reported at the end."""


def _job_options(fn):
    options = [
        click.option("--preset", default="paper", show_default=True, help="Preset or .yaml."),
        click.option("--shards", type=click.IntRange(min=1), required=True),
        click.option("--gpus-per-task", type=click.IntRange(min=0), default=1, show_default=True),
        click.option("--cpus-per-task", type=click.IntRange(min=1), default=8, show_default=True),
        click.option(
            "--results",
            type=click.Path(file_okay=False, path_type=Path),
            required=True,
            help="Shared folder: shards/, merged/, reports/ and the scripts go here.",
        ),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


@submit.command("slurm")
@_job_options
@click.option("--partition", default=None)
@click.option("--time", "time_limit", default=None, help="Per array task, e.g. 12:00:00.")
@click.option("--dry-run", is_flag=True, help="Print the two scripts instead of submitting.")
def slurm_cmd(preset, shards, gpus_per_task, cpus_per_task, results, partition, time_limit,
              dry_run) -> None:  # fmt: skip
    """Submit the matrix as a Slurm array (one shard per task) plus a dependent merge job."""
    from slidesparse.run.submit import ShardJob, slurm_scripts, submit_slurm

    job = ShardJob(preset, shards, results, gpus_per_task, cpus_per_task, partition, time_limit)
    if dry_run:
        array, merge = slurm_scripts(job)
        click.echo(f"# array.sbatch\n{array}\n# merge.sbatch (--dependency=afterany:<array>)")
        click.echo(merge)
        return
    array_id, merge_id, folder = submit_slurm(job)
    click.echo(f"array job {array_id} ({shards} shards), merge job {merge_id}; scripts in {folder}")


@submit.command("k8s")
@_job_options
@click.option("--image", required=True, help="The slidesparse image the pods run.")
@click.option("--claim", required=True, help="PersistentVolumeClaim, mounted at --results.")
@click.option("--namespace", default=None)
def k8s_cmd(preset, shards, gpus_per_task, cpus_per_task, results, image, claim,
            namespace) -> None:  # fmt: skip
    """Print a Kubernetes Indexed Job (one shard per completion index) and its merge Job."""
    import yaml

    from slidesparse.run.submit import ShardJob, k8s_manifests

    job = ShardJob(preset, shards, results, gpus_per_task, cpus_per_task)
    docs = k8s_manifests(job, image, claim, mount=str(results), namespace=namespace)
    click.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


commands = [submit]
