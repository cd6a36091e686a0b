"""The bench measures as on a server: dpkg fsyncs every file, the trials run on a journaled
ext4 image, and the peak-RSS row is the agent's own (real processes, a real loop mount)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mgr_agent.layout import Layout
from mgr_agent.sandbox.samples import ispmanager_files, write_zip
from tests.bench import deployed, trialfs
from tests.bench import payload as pl
from tests.bench import trials as trials_mod
from tests.bench.trials import DPKG_FLAGS, TrialFailed, Trials, dpkg_config

HAVE_DPKG = shutil.which("dpkg") is not None and shutil.which("dpkg-deb") is not None
CAN_MOUNT = trialfs.TrialFilesystem(Path("/nonexistent")).why_not() is None


def test_dpkg_config_lists_the_forced_options_and_the_bench_overrides_unsafe_io(tmp_path: Path) -> None:
    cfg, cfg_d = tmp_path / "dpkg.cfg", tmp_path / "dpkg.cfg.d"
    cfg_d.mkdir()
    cfg.write_text("# a comment\nno-debsig\nlog /var/log/dpkg.log\n")
    (cfg_d / "docker-apt-speedup").write_text("# For most Docker users ...\n\nforce-unsafe-io\n")
    (cfg_d / "local").write_text("force-confold,confdef\n")
    found = dpkg_config((cfg, cfg_d))
    assert found["config_forces"] == {str(cfg_d / "docker-apt-speedup"): ["force-unsafe-io"],
                                      str(cfg_d / "local"): ["force-confold,confdef"]}
    assert found["config_forces_unsafe_io"] is True
    assert found["bench_overrides"] == ["--no-force-unsafe-io"]
    assert "--no-force-unsafe-io" in DPKG_FLAGS and "--no-force-unsafe-io" in found["bench_flags"]
    (cfg_d / "docker-apt-speedup").unlink()
    assert dpkg_config((cfg, cfg_d))["config_forces_unsafe_io"] is False
    assert dpkg_config((tmp_path / "missing",))["config_forces"] == {}


@pytest.mark.skipif(not HAVE_DPKG or shutil.which("strace") is None, reason="needs dpkg, dpkg-deb, strace")
def test_the_bench_dpkg_fsyncs_every_file_it_installs(tmp_path: Path) -> None:
    """Whatever /etc/dpkg/dpkg.cfg.d forces (docker-apt-speedup: force-unsafe-io), the
    bench's dpkg fsyncs each file, as a server's does: counted with strace."""
    deb = pl.Payloads(tmp_path / "payloads").deb("plesk", 100, "v1")
    files = pl.describe(pl.Payloads(tmp_path / "payloads").zip("plesk", 100, "v1"))["files"]
    trials = Trials(tmp_path / "work", sys.executable)
    root = trials.dpkg_root("strace")
    counts = tmp_path / "strace.txt"
    argv = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(counts),
            "dpkg", f"--root={root}", *DPKG_FLAGS, "-i", str(deb)]
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    # % time, seconds, usecs/call, calls, [errors,] syscall
    calls = [int(line.split()[3]) for line in counts.read_text().splitlines() if line.endswith(" fsync")]
    assert calls and calls[0] >= files, counts.read_text()
    assert (root / "var/lib/dpkg/info/bench-ext.list").is_file()


@pytest.mark.skipif(not HAVE_DPKG or shutil.which("php") is None, reason="needs dpkg, dpkg-deb, php")
@pytest.mark.parametrize("panel", pl.PANELS)
def test_the_deb_runs_the_packages_hooks_as_its_maintainer_scripts(tmp_path: Path, panel: str) -> None:
    """dpkg runs the same hook processes the agent runs (pre-install, post-install,
    pre-uninstall), so that the two installers are compared on the same work."""
    payloads = pl.Payloads(tmp_path / "payloads")
    deb = payloads.deb(panel, 100, "v1")
    trials = Trials(tmp_path / "work", sys.executable)
    root = trials.dpkg_root("hooks")
    name = pl.deb_name(panel)
    installed = subprocess.run(["dpkg", f"--root={root}", *DPKG_FLAGS, "-i", str(deb)],
                               check=True, capture_output=True, text=True, timeout=300)
    removed = subprocess.run(["dpkg", f"--root={root}", *DPKG_FLAGS, "-r", name],
                             check=True, capture_output=True, text=True, timeout=300)
    assert f"pre-install install: {name} 1.0" in installed.stdout
    assert f"post-install configure : {name} 1.0" in installed.stdout
    assert f"pre-uninstall remove: {name} 1.0" in removed.stdout


def test_peak_rss_is_the_agent_alone_and_wait4_includes_the_hooks(tmp_path: Path) -> None:
    """A hook that holds 200 MB: ``wait4`` of the command sees it, the agent's own
    peak (``VmHWM``, ``tests.bench.agent_rss``) does not; the hook does not inherit the
    wrapper's variable."""
    seen = tmp_path / "hook-env.txt"
    hook = (f'echo "${{BENCH_AGENT_RSS:-unset}}" > {seen}\n'
            f'{sys.executable} -c "b = b\'x\' * (200 << 20)"\n')
    package = write_zip(ispmanager_files("rsshog", "1.0", post_install=hook), tmp_path / "rsshog.zip")
    trials = Trials(tmp_path / "work", sys.executable)
    temp = Path(tempfile.gettempdir())
    before_files = set(temp.glob("bench-rss-*"))
    seconds = trials.install(trials.agent_root("rss"), package, rss=True, timed=False)
    assert set(temp.glob("bench-rss-*")) <= before_files, "the RSS file is removed after reading"
    assert seconds > 0
    agent, whole = trials.agent_maxrss_kib * 1024, trials.last.maxrss_kib * 1024
    assert 10e6 < agent < 150e6, agent
    assert whole > 200e6, whole
    assert seen.read_text().strip() == "unset"
    # without rss=True the agent runs as `python -m mgr_agent`, and the figure is not updated
    before = trials.agent_maxrss_kib
    trials.agent(trials.agent_root("list"), "list", action="listed", timed=False)
    assert trials.agent_maxrss_kib == before


def test_peak_rss_is_not_the_size_of_the_bench_that_started_the_agent(tmp_path: Path) -> None:
    """Linux keeps the peak RSS of the image replaced by ``execve`` in ``ru_maxrss``: an
    agent started by a bench process holding 200 MB must still be measured alone."""
    ballast = b"x" * (200 << 20)  # this process's own pages, inherited by the fork
    package = write_zip(ispmanager_files("small", "1.0"), tmp_path / "small.zip")
    trials = Trials(tmp_path / "work", sys.executable)
    trials.install(trials.agent_root("rss"), package, rss=True, timed=False)
    assert 10e6 < trials.agent_maxrss_kib * 1024 < 150e6, trials.agent_maxrss_kib
    assert trials.last.maxrss_kib * 1024 > 200e6  # wait4's figure carries the fork's size
    assert len(ballast) == 200 << 20


def test_agent_rss_writes_the_peak_even_when_the_command_fails(tmp_path: Path) -> None:
    out = tmp_path / "rss"
    env = {**os.environ, "BENCH_AGENT_RSS": str(out)}
    done = subprocess.run([sys.executable, "-m", "tests.bench.agent_rss", "--root", str(tmp_path / "nothing"),
                           "uninstall", "absent", "--json"], cwd=Path(__file__).resolve().parents[2],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert int(out.read_text()) > 5_000  # KiB: a Python process


def test_here_runs_in_the_work_directory_and_says_so(tmp_path: Path) -> None:
    with trialfs.TrialFilesystem(tmp_path / "work", "here") as fs:
        assert fs.root == tmp_path / "work"
        assert fs.info["kind"] == "here" and fs.info["why"] == "--fs here"
        assert fs.info["type"] != "?"
        assert fs.note is not None and "--fs here" in fs.note
        assert not fs.mounted
    assert not (tmp_path / "work" / trialfs.IMAGE).exists()


def test_a_timed_command_waits_for_the_reclaimers_of_the_agents_earlier_commands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trials = Trials(tmp_path, sys.executable)
    root = trials.agent_root("agent")
    trials.agent(root, "list", action="listed")  # an agent command: its root is watched
    assert trials.reclaiming == {root}
    left = Layout.at(root).reclaim_dir / "t-old"  # an old tree its reclaimer has not deleted yet
    left.mkdir(parents=True)
    monkeypatch.setattr(trials_mod, "TIMEOUT", 0.2)  # the bound on the wait, not a sleep
    with pytest.raises(TrialFailed, match="reclaim/ not emptied"):
        trials.run(["true"])
    trials.run(["true"], timed=False)  # an untimed command does not wait
    left.rmdir()
    trials.run(["true"])
    assert not trials.reclaiming


def test_a_finished_repetitions_trees_are_deleted_and_the_rest_kept(tmp_path: Path) -> None:
    trials = Trials(tmp_path, sys.executable)
    kept = trials.agent_root("list")            # made before the repetitions (the list row's)
    mark = trials.count
    roots = [trials.agent_root("agent-fresh"), trials.new_dir("unzip")]
    (roots[1] / "file").write_bytes(b"x")
    trials.remove_after(mark)
    assert kept.is_dir() and (kept / "usr/local/psa/version").is_file()
    assert not any(r.exists() for r in roots)
    assert trials.agent_root("next").name == f"{mark + 3:05d}-next"  # numbers go on


def test_the_image_is_filled_with_zeros_of_the_size_asked(tmp_path: Path) -> None:
    image = tmp_path / "img"
    trialfs.fill(image, (8 << 20) * 2 + 4096)  # two chunks and a part, O_DIRECT or not
    st = image.stat()
    assert st.st_size == (8 << 20) * 2 + 4096 and st.st_blocks * 512 >= st.st_size
    with open(image, "rb") as f:
        assert not any(f.read()), "zeros only"


@pytest.mark.skipif(not CAN_MOUNT, reason="needs root and loop devices")
def test_the_image_is_journaled_ext4_and_goes_at_the_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with trialfs.TrialFilesystem(work, "image", trialfs.GIB) as fs:
        assert fs.mounted and fs.note is None
        assert fs.root == work / trialfs.MOUNT
        info = fs.info
        assert (info["kind"], info["type"], info["journal"]) == ("image", "ext4", True), info
        assert info["device"].startswith("/dev/loop")
        assert "data=ordered" in info["ext4_options"]
        assert info["journal_source"].startswith("/sys/fs/ext4/")
        assert os.stat(fs.root).st_dev != os.stat(work).st_dev
        # written in full, so that no first write makes the host allocate (trialfs's docstring)
        assert (work / trialfs.IMAGE).stat().st_blocks * 512 >= trialfs.GIB, "sparse"
        assert info["filled"] and "an image of 1 GiB written in full" in trialfs.summary(info)
        assert "at most 0.5 GiB in use" in trialfs.summary({**info, "peak_used_bytes": trialfs.GIB // 2})
        # mkfs zeroed every inode table: no ext4lazyinit writing beside the trials
        assert "lazy_itable_init=0" in trialfs.summary(info)
        groups = [line for line in subprocess.run(
            ["dumpe2fs", str(work / trialfs.IMAGE)], capture_output=True, text=True,
            check=True).stdout.splitlines() if line.startswith("Group ") and "(Blocks" in line]
        assert groups and all("ITABLE_ZEROED" in line for line in groups), groups[:3]
        (fs.root / "trials").mkdir()
        (fs.root / "trials/file").write_bytes(b"x" * 4096)
        assert "with a journal (rw" in trialfs.summary(info)
    assert not (work / trialfs.IMAGE).exists()
    assert not (work / trialfs.MOUNT).exists()
    assert str(work) not in Path("/proc/self/mounts").read_text()


@pytest.mark.skipif(not CAN_MOUNT, reason="needs root and loop devices")
def test_the_image_is_unmounted_on_an_error_and_lazily_when_busy(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt), trialfs.TrialFilesystem(work, "image", trialfs.GIB) as fs:
        held = open(fs.root / "held", "w")  # noqa: SIM115 - kept open across the unmount
        raise KeyboardInterrupt
    try:
        assert not (work / trialfs.MOUNT).exists(), "unmounted lazily although a file was open"
        assert not (work / trialfs.IMAGE).exists()
        assert str(work) not in Path("/proc/self/mounts").read_text()
        held.write("still writable until closed")
    finally:
        held.close()
    # a run interrupted before the end left an image mounted: the next one clears it
    stale = trialfs.TrialFilesystem(work, "image", trialfs.GIB, keep=True)
    with stale:
        pass
    assert stale.mounted and (work / trialfs.MOUNT).is_mount()
    with trialfs.TrialFilesystem(work, "here") as fs:
        assert fs.root == work
    assert not (work / trialfs.MOUNT).exists() and not (work / trialfs.IMAGE).exists()


def test_the_agent_measured_is_the_deployed_one_or_says_why_not(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench measures the agent in a venv of the distribution's python3, as
    deploy/install.sh installs it; the current interpreter stands in for itself, and an
    interpreter that cannot build a venv leaves the current one, with the reason."""
    monkeypatch.setenv("BENCH_PYTHON", "/opt/python3-that-is-not-there")
    assert deployed.interpreter() == "/opt/python3-that-is-not-there"
    python, what = deployed.agent_python(tmp_path)
    assert python == sys.executable
    assert "/opt/python3-that-is-not-there" in what and "could not be built" in what
    assert not list(tmp_path.glob("agent-venv-*"))  # the failed venv is not left behind
    monkeypatch.setenv("BENCH_PYTHON", sys.executable)
    assert deployed.agent_python(tmp_path) == (sys.executable, f"this interpreter ({sys.executable})")
    monkeypatch.delenv("BENCH_PYTHON")
    expected = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    assert deployed.interpreter() == expected


def test_an_image_the_host_has_no_room_for_runs_the_trials_here_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_room(path: Path, size: int) -> None:
        path.write_bytes(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(trialfs, "fill", no_room)
    fs = trialfs.TrialFilesystem(tmp_path / "work", "image", trialfs.GIB)
    why = fs.why_not()
    if why is not None:
        pytest.skip(why)
    with fs:
        assert fs.root == tmp_path / "work" and not fs.mounted
        assert fs.note is not None and "No space left on device" in fs.note
    assert not (tmp_path / "work" / trialfs.IMAGE).exists()
