"""Golden renders of the packaged Slurm and PBSPro templates, and render-time refusals.

Expected scripts live in golden/. To regenerate them after an intended template change, run
``FNRELAY_UPDATE_GOLDEN=1 pytest tests/templates/test_render.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fnrelay_endpoint.engines.batch.templating import (
    TemplateRenderError,
    batch_context,
    hms,
    render_batch_script,
    slurm_minutes,
)
from fnrelay_endpoint.engines.resources import ResourceSpecification, ResourceSpecificationError
from fnrelay_wrappers.shell import EnvRef

GOLDEN = Path(__file__).parent / "golden"
TASK_ID = "0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20"
BOX = f"/scratch/fnrelay/tasks/{TASK_ID}"
WORKER = ["python3", "-m", "fnrelay_endpoint.worker", "task.json"]

FULL_SPEC = {
    "num_nodes": 2, "ranks_per_node": 4, "cores_per_rank": 2, "gpus_per_node": 1,
    "memory": "8G", "walltime": 90, "partition": "gpu", "account": "proj.42",
    "exclusive": True,
    "container": {"type": "apptainer", "image": "/images/sim.sif", "binds": ["/data:/data:ro"]},
    "conda": {"env": "sim"},
}
FULL_DEFAULTS = {"modules": ["gcc/12.2", "openmpi/4.1"],
                 "pre_exec": ['echo "starting in $FNRELAY_TASK_SANDBOX"']}

CASES = {
    "slurm_minimal": ("slurm", {}, {}, None, {}, WORKER, False),
    "slurm_mpi_full": (
        "slurm", {**FULL_SPEC, "qos": "high", "constraint": "a100&ib"},
        {**FULL_DEFAULTS, "scheduler_options": ["#SBATCH --mail-type=NONE"]},
        "srun", {}, ["./simulate", "--steps", "10"], True),
    "slurm_odd_values": (
        "slurm",
        {"num_ranks": 2, "walltime": "01:00:01", "partition": "debug-x_1.2",
         "container": {"type": "podman", "image": "ghcr.io/org/img:1.0@sha256:0123abcd",
                       "binds": ["/in+1"]},
         "conda": {"prefix": "/opt/envs/py3.11+cuda"}},
        {"launcher_options": "--mpi=pmix --export='ALL,X=a b'"},
        "srun", {}, ["echo", "it's $(not) run", "`id`"], True),
    "pbspro_minimal": ("pbspro", {}, {}, None, {}, WORKER, False),
    "pbspro_mpi_full": (
        "pbspro", FULL_SPEC,
        {**FULL_DEFAULTS, "scheduler_options": ["#PBS -W umask=022"]},
        "pals", {"hostfile": EnvRef("PBS_NODEFILE")}, ["./simulate"], True),
    # ALCF Polaris, as its user guide's job scripts ask: system and filesystems keys, depth
    # binding, one GPU per rank, and the hostfile written in the YAML config as text.
    "pbspro_polaris": (
        "pbspro",
        {"num_nodes": 2, "ranks_per_node": 4, "cores_per_rank": 8, "gpus_per_node": 4,
         "walltime": "00:30:00", "account": "MyProject", "reservation": "R123456",
         "chunk": {"system": "polaris"}, "filesystems": "home:eagle",
         "licenses": "matlab:2"},
        {"modules": ["conda"], "conda": {"env": "base"}},
        "polaris", {"hostfile": "$PBS_NODEFILE"}, ["./simulate"], True),
    # OLCF Frontier-style Slurm: typed site keys, login shell, a GPU per rank with srun.
    "slurm_site_keys": (
        "slurm",
        {"num_nodes": 2, "ranks_per_node": 8, "cores_per_rank": 7, "gpus_per_node": 8,
         "reservation": "maint", "gres": "nvme:1", "licenses": "lustre@db:2",
         "clusters": "frontier", "signal": "B:USR1@120", "login_shell": True},
        {"conda": {"tool": "micromamba"}, "launcher_options": "--mpi=pmix"},
        "frontier", {}, ["./simulate"], True),
}


@pytest.fixture(autouse=True)
def endpoint_user(monkeypatch):
    """Podman/docker get the endpoint user's uid at render time: a fixed one for the goldens."""
    monkeypatch.setattr("fnrelay_wrappers.container.endpoint_user", lambda: (1000, 1000))


def render_case(name: str) -> str:
    scheduler, spec, defaults, launcher, settings, command, launch = CASES[name]
    rs = ResourceSpecification.from_task(spec, defaults, scheduler=scheduler)
    chain = rs.launch_chain(BOX, launcher, settings)
    context = batch_context(scheduler, TASK_ID, BOX, rs, chain, command, launch=launch)
    return render_batch_script(scheduler, context)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_render(name):
    text = render_case(name)
    golden = GOLDEN / f"{name}.sh"
    if os.environ.get("FNRELAY_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


def test_slurm_directives_of_full_spec():
    text = render_case("slurm_mpi_full")
    for line in [f"#SBATCH --job-name=fnrelay-{TASK_ID}", "#SBATCH --nodes=2",
                 "#SBATCH --ntasks=8", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --gpus-per-node=1", "#SBATCH --mem=8G",
                 "#SBATCH --time=2", "#SBATCH --partition=gpu", "#SBATCH --account=proj.42",
                 "#SBATCH --qos=high", "#SBATCH --constraint=a100&ib", "#SBATCH --exclusive",
                 f"#SBATCH --output={BOX}/stdout", f"#SBATCH --error={BOX}/stderr",
                 "#SBATCH --mail-type=NONE", "fnrelay_setup 'module load gcc/12.2'"]:
        assert line in text.splitlines()
    # every directive comes before the first command, or sbatch ignores it
    lines = text.splitlines()
    last_directive = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert all(line.startswith("#") for line in lines[:last_directive + 1])


def test_pbspro_directives_of_full_spec():
    lines = render_case("pbspro_mpi_full").splitlines()
    for line in [f"#PBS -N fnrelay-{TASK_ID}",
                 "#PBS -l select=2:ncpus=8:mpiprocs=4:ompthreads=2:ngpus=1:mem=8gb",
                 "#PBS -l place=scatter:excl", "#PBS -l walltime=00:01:30", "#PBS -q gpu",
                 "#PBS -A proj.42", f"#PBS -o {BOX}/stdout", f"#PBS -e {BOX}/stderr",
                 "#PBS -m n", "#PBS -W umask=022", "export OMP_NUM_THREADS=2"]:
        assert line in lines
    assert any('--hostfile "$PBS_NODEFILE"' in line for line in lines)


def test_polaris_job_as_alcf_documents_it():
    text = render_case("pbspro_polaris")
    lines = text.splitlines()
    for line in ["#PBS -l select=2:ncpus=32:mpiprocs=4:ompthreads=8:system=polaris:ngpus=4",
                 "#PBS -l place=scatter", "#PBS -l filesystems=home:eagle",
                 "#PBS -l matlab=2", "#PBS -q R123456", "#PBS -A MyProject",
                 "fnrelay_setup 'eval \"$(conda shell.bash hook)\"'",
                 "fnrelay_setup 'conda activate base'"]:
        assert line in lines, line
    command = lines[-2]
    assert command.startswith('mpiexec -n 8 --ppn 4 --hostfile "$PBS_NODEFILE" --depth=8 '
                              "--cpu-bind depth sh -c ")
    assert command.endswith("fnrelay-gpu-affinity 4 1 reverse CUDA_VISIBLE_DEVICES ./simulate")


def test_slurm_site_keys_are_typed_directives():
    lines = render_case("slurm_site_keys").splitlines()
    assert lines[0] == "#!/bin/bash -l"
    for line in ["#SBATCH --reservation=maint", "#SBATCH --gres=nvme:1",
                 "#SBATCH --licenses=lustre@db:2", "#SBATCH --clusters=frontier",
                 "#SBATCH --signal=B:USR1@120", "export OMP_NUM_THREADS=7"]:
        assert line in lines, line
    assert lines[-2] == ("srun -N 2 -n 16 --ntasks-per-node=8 --cpus-per-task=7 "
                         "--gpus-per-task=1 --gpu-bind=closest --mpi=pmix ./simulate")


@pytest.mark.parametrize("scheduler, spec, key", [
    ("pbspro", {"gres": "gpu:1"}, "gres"),
    ("pbspro", {"signal": "USR1@60"}, "signal"),
    ("pbspro", {"clusters": "a"}, "clusters"),
    ("slurm", {"filesystems": "home"}, "filesystems"),
    ("slurm", {"chunk": {"system": "polaris"}}, "chunk"),
    ("pbspro", {"licenses": "matlab@srv:1"}, "licenses"),
    ("pbspro", {"reservation": "R1", "partition": "debug"}, "reservation"),
])
def test_site_keys_the_scheduler_lacks_are_refused(scheduler, spec, key):
    with pytest.raises(ResourceSpecificationError, match=key):
        context_for(scheduler, spec)


@pytest.mark.parametrize("seconds, minutes", [(1, 1), (60, 1), (61, 2), (3600, 60)])
def test_slurm_walltime_rounds_up_to_minutes(seconds, minutes):
    assert slurm_minutes(seconds) == minutes


def test_pbs_walltime_format():
    assert hms(90) == "00:01:30" and hms(49 * 3600 + 61) == "49:01:01"


def context_for(scheduler="slurm", spec=None, task_id=TASK_ID, sandbox=BOX):
    rs = ResourceSpecification.from_task(spec or {}, {})
    return batch_context(scheduler, task_id, sandbox, rs, rs.launch_chain(sandbox), WORKER)


def test_site_template_gets_the_same_context(tmp_path):
    site = tmp_path / "site.sh.j2"
    site.write_text("#!/bin/bash\n#SBATCH -J {{ job_name | directive }}\n"
                    "#SBATCH --reservation=maint\n{% include 'body.sh.j2' %}")
    text = render_batch_script("slurm", context_for(), template_path=site)
    assert text.startswith(f"#!/bin/bash\n#SBATCH -J fnrelay-{TASK_ID}\n#SBATCH --reservation")
    assert "fnrelay_endpoint.worker" in text


def test_misspelt_variable_is_an_error(tmp_path):
    site = tmp_path / "site.sh.j2"
    site.write_text("#SBATCH -p {{ partiton }}\n")
    with pytest.raises(TemplateRenderError, match="partiton"):
        render_batch_script("slurm", context_for(), template_path=site)


def test_template_cannot_reach_python_internals(tmp_path):
    site = tmp_path / "site.sh.j2"
    site.write_text("{{ job_name.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateRenderError):
        render_batch_script("slurm", context_for(), template_path=site)


@pytest.mark.parametrize("task_id", ["x\n#SBATCH --uid=0", "a b", "a'b"])
def test_directive_values_that_could_break_the_line_are_refused(task_id):
    with pytest.raises(TemplateRenderError, match="directive"):
        render_batch_script("slurm", context_for(task_id=task_id))


@pytest.mark.parametrize("sandbox", ["relative", "/a b", "/a:b", "/a\n", "/scratch/50%j/t"])
def test_unsafe_sandbox_refused(sandbox):
    with pytest.raises(TemplateRenderError, match="sandbox"):
        context_for(sandbox=sandbox)


@pytest.mark.parametrize("key, value", [("qos", "high"), ("constraint", "a100")])
def test_pbspro_refuses_slurm_only_keys(key, value):  # noqa: D103
    with pytest.raises(ResourceSpecificationError, match=key):
        context_for("pbspro", {key: value})


def test_scheduler_options_checked_at_render_time():
    rs = ResourceSpecification.from_task({}, {"scheduler_options": ["#SBATCH --mem=1G"]})
    with pytest.raises(ResourceSpecificationError, match="scheduler_options"):
        batch_context("pbspro", TASK_ID, BOX, rs, rs.launch_chain(BOX), WORKER)


def test_unknown_scheduler():
    with pytest.raises(TemplateRenderError, match="cobalt"):
        render_batch_script("cobalt", {})


def test_hostfile_written_in_the_yaml_config_expands_in_the_job():
    import yaml

    from fnrelay_endpoint.engines.batch.engine import BatchConfig

    cfg = BatchConfig.from_dict(yaml.safe_load(
        "scheduler: pbspro\n"
        "launcher: {type: mpich, hostfile: $PBS_NODEFILE}\n"
        "defaults:\n  launcher_options: --env X=${PBS_JOBID}\n"))
    rs = ResourceSpecification.from_task({"num_ranks": 2}, cfg.defaults)
    chain = rs.launch_chain(BOX, cfg.launcher, cfg.launcher_settings)
    assert chain.command_line(["./a"]) == \
        'mpiexec -n 2 -ppn 2 --hostfile "$PBS_NODEFILE" --env X="${PBS_JOBID}" ./a'


def _render(scheduler: str, spec: dict, attempt: int = 1) -> str:
    rs = ResourceSpecification.from_task(spec, scheduler=scheduler)
    context = batch_context(scheduler, TASK_ID, BOX, rs, rs.launch_chain(BOX), ["true"],
                            attempt=attempt)
    return render_batch_script(scheduler, context)


@pytest.mark.parametrize("scheduler, off, on", [
    ("slurm", "#SBATCH --no-requeue\n", "#SBATCH --requeue\n"),
    ("pbspro", "#PBS -r n\n", "#PBS -r y\n"),
])
def test_requeue_is_off_unless_the_task_allows_it(scheduler, off, on):
    assert off in _render(scheduler, {}) and on not in _render(scheduler, {})
    assert on in _render(scheduler, {"requeue": True})
    with pytest.raises(ResourceSpecificationError, match="requeue"):
        ResourceSpecification.from_task({"requeue": "yes"})


def test_requeue_is_refused_where_the_template_cannot_write_it():
    with pytest.raises(ResourceSpecificationError, match="'requeue': not supported by sge"):
        _render("sge", {"requeue": True})


def test_a_retry_has_its_own_job_name():
    assert "--job-name=fnrelay-" + TASK_ID + "-attempt2\n" in _render("slurm", {}, attempt=2)
    assert "#PBS -N fnrelay-" + TASK_ID + "-attempt3\n" in _render("pbspro", {}, attempt=3)
