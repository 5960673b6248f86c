"""The one-node test cluster itself does what the batch-engine tests rely on."""

from __future__ import annotations


def test_cluster_has_two_partitions_and_eight_cpus(slurm_cluster):
    out = slurm_cluster.run("sinfo", "-h", "-o", "%P %c %T").split("\n")
    assert sorted(line.split()[0] for line in out if line) == ["batch", "debug*"]
    assert all(line.split()[1:] == ["8", "idle"] for line in out if line)


def test_srun_runs_two_tasks(slurm_cluster):
    out = slurm_cluster.run("srun", "-n", "2", "--label", "hostname", timeout=60)
    assert sorted(line.split(":")[0] for line in out.splitlines()) == ["0", "1"]


def test_sbatch_wrap_writes_output(slurm_cluster, tmp_path):
    out_file = tmp_path / "out.txt"
    job = slurm_cluster.run("sbatch", "--parsable", "--wait", f"--output={out_file}",
                            "--wrap", "echo from-the-job", timeout=60).strip()
    assert job.isdigit()
    assert out_file.read_text().strip() == "from-the-job"
