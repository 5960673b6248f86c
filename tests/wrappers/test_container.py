"""Container runner command lines per runtime (the tools need not be installed)."""

from __future__ import annotations

import os

import pytest

from fnrelay_wrappers.container import Bind, container_argv
from fnrelay_wrappers.shell import join

BOX = "/scratch/fnrelay/t1"


@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_apptainer_and_singularity(runtime):
    argv = container_argv(runtime, "/img/app.sif", ["/data", "/in:/mnt/in:ro"], BOX, "--nv")
    assert join(argv) == (
        f"{runtime} exec --bind /data:/data --bind /in:/mnt/in:ro --bind {BOX}:{BOX} "
        f"--pwd {BOX} --nv /img/app.sif"
    )


@pytest.mark.parametrize("runtime", ["podman", "docker"])
def test_podman_and_docker_run_ranks_as_the_user_on_the_host_network(runtime):
    argv = container_argv(runtime, "docker.io/library/alpine:3.19", ["/data"], BOX)
    uid = f"--user={os.getuid()}:{os.getgid()}"
    assert join(argv).startswith(
        f"{runtime} run --rm --network=host --ipc=host "
        + ("--userns=keep-id " if runtime == "podman" and os.getuid() else "")
        + f"{uid} -v /data:/data -v {BOX}:{BOX} -w {BOX} "
        "-e FNRELAY_TASK_SANDBOX -e FNRELAY_NUM_RANKS -e FNRELAY_NUM_NODES "
        "-e CUDA_VISIBLE_DEVICES ")
    assert argv[-1] == "docker.io/library/alpine:3.19"
    passed = {argv[i + 1] for i, t in enumerate(argv) if t == "-e"}
    if runtime == "podman":  # podman passes every host variable of a prefix
        assert passed >= {"PMI_*", "PMIX_*", "SLURM_*", "OMPI_*", "PALS_*", "OMP_*"}
    else:  # docker has no wildcards: the names MPI start-up reads
        assert passed >= {"PMI_RANK", "PMIX_RANK", "PMIX_NAMESPACE", "PMIX_SERVER_URI41",
                          "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PALS_RANKID",
                          "OMP_NUM_THREADS"}


@pytest.mark.parametrize("runtime, vendor, flags", [
    ("apptainer", "nvidia", ["--nv"]), ("singularity", "amd", ["--rocm"]),
    ("podman", "nvidia", ["--device", "nvidia.com/gpu=all"]),
    ("docker", "nvidia", ["--gpus", "all"]),
    ("docker", "amd", ["--device", "/dev/kfd", "--device", "/dev/dri"]),
    ("shifter", "nvidia", ["--module=gpu"]),
])
def test_gpu_flag_per_runtime(runtime, vendor, flags):
    argv = container_argv(runtime, "img", [], BOX, gpus=vendor)
    start = next(i for i, t in enumerate(argv) if t == flags[0])
    assert argv[start:start + len(flags)] == flags
    assert flags[0] not in container_argv(runtime, "img", [], BOX)


def test_runtime_without_gpu_support_is_refused():
    with pytest.raises(ValueError, match="shifter"):
        container_argv("shifter", "img", [], BOX, gpus="amd")


def test_shifter():
    argv = container_argv("shifter", "docker:ubuntu:22.04", ["/in:/mnt/in:ro"], BOX)
    assert join(argv) == (
        f"shifter --image=docker:ubuntu:22.04 --volume=/in:/mnt/in:ro --volume={BOX}:{BOX} "
        f"--workdir={BOX}"
    )


def test_sandbox_bound_once_even_if_listed():
    argv = container_argv("apptainer", "x.sif", [BOX], BOX)
    assert argv.count("--bind") == 1


def test_odd_image_reference_kept_as_one_word():
    image = "ghcr.io/org/img:1.0@sha256:0123abcd"
    assert container_argv("podman", image)[-1] == image


@pytest.mark.parametrize("image", ["$(id)", "a b", "x;y", "`id`", "-rf", "", "a\nb"])
def test_bad_images_refused(image):
    with pytest.raises(ValueError, match="image"):
        container_argv("apptainer", image)


@pytest.mark.parametrize("text", ["rel", "/a:/b:/c", "/a:rel", "/a b", "/a,/b", "/a/../etc",
                                  "/a\n", "/a:/b:rx"])
def test_bad_binds_refused(text):
    with pytest.raises(ValueError):
        Bind.parse(text)


def test_bind_forms():
    assert Bind.parse("/d") == Bind("/d", "/d")
    assert Bind.parse("/d:ro") == Bind("/d", "/d", True)
    assert Bind.parse("/s:/d:rw") == Bind("/s", "/d", False)


def test_unknown_runtime_refused():
    with pytest.raises(ValueError, match="unknown container runtime 'lxc'"):
        container_argv("lxc", "x.sif")
