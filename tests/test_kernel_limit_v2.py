"""Each kernel its own memory group on a real cgroup v2 host: a delegated subtree, made, moved, enforced, removed.

This machine's memory controller is bound to cgroup v1, so no cgroup2 mount here has one; the test boots a
throw-away VM (tests/cgroup2_vm.py: the distribution's kernel, cgroup2 alone, this machine's files read-only)
and runs tests/kernel_limit_v2_script.py in it. What a sentinel kernel adds on top (the guard, ``%sentinel``)
is the same code as on v1 (tests/test_kernel_limit_kernels.py); here the v2 parts run for real: the plan,
``memory.max``/``memory.swap.max``, entering the group before exec, moving the limit, the OOM kill staying
inside one kernel's group (``memory.events``), removal and the sweep. Skips where no VM can be started.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from cgroup2_vm import run_in_vm, vm_skip_reason
from conftest import MiB

HERE = Path(__file__).resolve().parent
# A systemd user manager for root in the VM (where the machine's own systemd is: the VM has no PID-1 systemd,
# so /run/systemd/system is made for it to start), in user@0.service as logind would place it.
SYSTEMD_USER = """
if [ -x /usr/lib/systemd/systemd ]; then
  mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system /run/user/0 && chmod 700 /run/user/0
  export XDG_RUNTIME_DIR=/run/user/0
  echo +memory > /sys/fs/cgroup/cgroup.subtree_control
  mkdir -p /sys/fs/cgroup/user.slice/user@0.service && echo +memory > /sys/fs/cgroup/user.slice/cgroup.subtree_control
  echo $$ > /sys/fs/cgroup/user.slice/user@0.service/cgroup.procs
  (/usr/lib/systemd/systemd --user > /dev/null 2>&1 &)
  i=0; while [ ! -S /run/user/0/systemd/private ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
fi
"""


@pytest.fixture(scope="module")
def v2(tmp_path_factory) -> dict:
    """Return what the script found on the VM's cgroup v2 host (one boot for the whole module)."""
    reason = vm_skip_reason()
    if reason:
        pytest.skip(f"no cgroup v2 VM can be started here: {reason}")
    script = SYSTEMD_USER + f"cd {HERE} && PYTHONDONTWRITEBYTECODE=1 exec {sys.executable} kernel_limit_v2_script.py kernel_sentinel\n"
    console = run_in_vm(script, tmp_path_factory.mktemp("v2vm"))
    line = next((x for x in console.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, console
    result = json.loads(line.removeprefix("RESULT "))
    assert "error" not in result, result.get("error")
    assert "memory" in result["controllers"].split(), result["controllers"]  # a real v2 memory controller
    return result


def test_the_group_is_made_under_the_nearest_ancestor_that_delegates_memory(v2: dict) -> None:
    assert v2["plan"] == {"mechanism": "cgroup v2", "parent": "/sys/fs/cgroup/jupyter.service", "parent_path": "/jupyter.service"}
    group = v2["group"]
    assert os.path.dirname(group["directory"]) == "/sys/fs/cgroup/jupyter.service"  # a sibling of the server's leaf
    assert os.path.basename(group["directory"]).startswith("ks-kernel-") and group["directory"].endswith("-k1")
    assert group["memory.max"] == str(64 * MiB) and group["memory.swap.max"] == "0"
    assert group["env"] == {
        "KERNEL_SENTINEL_MEMORY_LIMIT": "100%",
        "KERNEL_SENTINEL_KERNEL_GROUP": f"cgroup v2|{64 * MiB}|{group['directory']}",
    }
    assert group["remembered"] == group["directory"] and group["message"] is None


def test_the_kernel_enters_its_group_before_exec_and_its_budget_names_it(v2: dict) -> None:
    assert v2["hold"] == ["ok", "ok"]
    assert v2["own_group"] == v2["group"]["directory"]
    assert v2["own_group_other"] != v2["own_group"] and v2["own_group_other"].endswith("-k2")
    name = os.path.basename(v2["own_group"])
    assert v2["budget"] == {
        "bytes": 64 * MiB,
        "source": f"cgroup v2 /jupyter.service/{name}",
        "described": f"this kernel's own memory group (cgroup v2 .../{name})",
    }
    assert 32 * MiB <= v2["held_bytes"] < 64 * MiB  # the 32 MiB it holds, and the interpreter


def test_the_limit_moves_up_and_down_never_below_what_it_holds_nor_beyond_what_is_free(v2: dict) -> None:
    moves = v2["moves"]
    assert moves[str(128 * MiB)] == ["ok", str(128 * MiB)]
    below = moves[str(16 * MiB)]
    assert below[0] == "refused" and "this kernel already holds" in below[1] and below[2] == str(128 * MiB)
    above = moves[str(2048 * MiB)]  # the VM has 1 GiB in all
    assert above[0] == "refused" and "is free above it: at most" in above[1] and above[2] == str(128 * MiB)
    assert moves[str(64 * MiB)] == ["ok", str(64 * MiB)]


def test_a_runaway_is_oom_killed_in_its_own_group_and_nobody_else_loses_anything(v2: dict) -> None:
    assert v2["wild_returncode"] == -9  # SIGKILL: no guard in this process, the group's limit held it
    assert v2["oom_kills"] == {"wild": 1, "calm": 0, "server_leaf": 0}
    assert v2["calm_more"] == "ok" and v2["calm_alive"]  # the other kernel still takes 16 MiB more


def test_the_group_goes_away_with_its_kernel_and_leftovers_are_swept(v2: dict) -> None:
    assert v2["removed"]
    swept, left = v2["swept"]
    assert swept == [left] and "-left" in left


def test_a_systemd_scope_made_by_the_supervisors_command_line_holds_the_kernel(v2: dict) -> None:
    scope = v2["scope"]
    if not scope["available"]:
        pytest.skip("no systemd user manager could be started in the VM (needs systemd installed on this machine)")
    assert scope["argv"] == ["systemd-run", "--user", "--scope", "--quiet", "--collect"] and scope["hold"] == "ok"
    assert scope["located"].endswith("/app.slice/" + os.path.basename(scope["located"]))
    assert os.path.basename(scope["located"]).startswith("ks-kernel-") and scope["located"].endswith("-s1.scope")
    assert scope["own"] == [scope["located"], "systemd scope"]
    assert scope["memory.max"] == str(64 * MiB) and scope["memory.swap.max"] == "0"
    assert scope["moved"] == str(96 * MiB)  # %sentinel budget: the scope's memory.max, delegated to the user
    # The runaway met its scope's limit. The scope's own OOM-kill counter goes with the scope (systemd removes
    # it once empty, whether before or after this read); app.slice's, hierarchical, counted it, and that is the
    # counter the supervisor reads before the kernel starts and after it ends (its proof of an OOM kill).
    assert scope["returncode"] == -9 and scope["oom_kills"][1] == 1 and scope["oom_kills"][0] in (None, 1)
    assert scope["counter_dir"] == os.path.dirname(scope["located"])
    assert scope["counted"][0] is not None and scope["counted"][1] == scope["counted"][0] + 1
    assert scope["removed"]
