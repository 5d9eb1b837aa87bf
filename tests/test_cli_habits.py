"""CLI habits shared by every sub-command: AE options, exit codes, logging flags, progress, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sswe_node.aetitle import Peer, parse_peer
from sswe_node.cli import build_parser, log_level, main
from sswe_node.errors import ConfigError
from sswe_node.tf_chatter import is_chatter
from tests.peers import free_port

SSWE_NODE = [sys.executable, "-m", "sswe_node.cli"]


def _cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real command line with stderr a pipe (not a terminal), as CI and logs see it."""
    return subprocess.run(
        [*SSWE_NODE, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


# -- AE@HOST:PORT and AE options ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PACS@127.0.0.1:4242", ("PACS", "127.0.0.1", 4242)),
        ("PACS@pacs.example.org:104", ("PACS", "pacs.example.org", 104)),
        ("PACS@[::1]:104", ("PACS", "::1", 104)),
        ("PACS@[fe80::1%eth0]:11112", ("PACS", "fe80::1%eth0", 11112)),
        (" MY AE @host:1", ("MY AE", "host", 1)),
    ],
)
def test_peer_parser_handles_hosts_and_ipv6(text: str, expected: tuple[str, str, int]) -> None:
    peer = parse_peer(text)
    assert tuple(peer) == expected
    assert parse_peer(str(peer)) == peer  # str() writes it back, IPv6 in brackets


@pytest.mark.parametrize(
    "text",
    ["PACS@::1:104", "PACS@[::1]", "PACS@host", "host:104", "@host:104", "A@h:0", "A@h:65536",
     "SEVENTEEN_CHARS_X@h:1", "BACK\\SLASH@h:1", "A@h:1:2"],
)  # fmt: skip
def test_peer_parser_refuses_malformed_peers(text: str) -> None:
    with pytest.raises(ConfigError):
        Peer.parse(text)


def _option_strings(command: list[str]) -> dict[str, list[str]]:
    parser = build_parser(command[0])
    for name in command:  # walk down to the (nested) sub-command's parser
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = sub.choices[name]
    return {a.dest: a.option_strings for a in parser._actions if a.help != "==SUPPRESS=="}


@pytest.mark.parametrize(
    ("command", "dests"),
    [
        (["serve"], {"calling_aet"}),
        (["echo"], {"calling_aet"}),
        (["dataset", "build"], {"calling_aet", "move_aet"}),
    ],
)
def test_ae_options_are_spelled_the_same_everywhere(command: list[str], dests: set[str]) -> None:
    options = _option_strings(command)
    spelled = {"calling_aet": ["-aet", "--aet", "--calling-aet"],
               "move_aet": ["-aem", "--aem", "--move-aet"]}  # fmt: skip
    for dest in dests:
        assert options[dest] == spelled[dest], command
    shown = {s for strings in options.values() for s in strings}
    assert not shown & {"--ae-title", "--calling-ae"}  # earlier spellings are hidden aliases


def test_earlier_ae_spellings_still_work() -> None:
    args = build_parser("serve").parse_args(["serve", "--ae-title", "OLD"])
    assert args.calling_aet == "OLD"
    args = build_parser("echo").parse_args(["echo", "A@h:1", "--calling-ae", "OLD"])
    assert args.calling_aet == "OLD"


# -- exit codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["echo", "PACS@::1:104"],  # a malformed peer
        ["echo", "A@h:1", "--aet", "SEVENTEEN_CHARS_X"],  # not an AE title
        ["dataset", "build", "x.h5", "--pacs", "nonsense"],
        ["serve", "--no-such-option"],
        ["cases", "--status", "lost"],
        ["convert"],  # a missing argument
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: sswe-node" in capsys.readouterr().err


def test_no_command_is_a_usage_error() -> None:
    assert main([]) == 2


def test_runtime_failures_exit_1(tmp_path: Path) -> None:
    # Nothing listens on the port: the echo fails at run time.
    assert main(["echo", f"NOBODY@127.0.0.1:{free_port()}", "--timeout", "2", "-q"]) == 1
    # simulate into a folder that is not empty: a runtime failure, not a usage error.
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    out = str(tmp_path / "taken")
    assert main(["simulate", "--out", out, "--no-progress", "-q"]) == 1
    # A configuration file that does not exist.
    assert main(["cases", "--config", str(tmp_path / "missing.toml")]) == 1


# -- logging flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["echo", "A@h:1"], None),
        (["echo", "A@h:1", "-v"], "DEBUG"),
        (["echo", "A@h:1", "-q"], "WARNING"),
        (["echo", "A@h:1", "-qq"], "ERROR"),
        (["echo", "A@h:1", "--log-level", "debug"], "DEBUG"),
        (["-q", "echo", "A@h:1"], "WARNING"),
        (["--log-level", "ERROR", "echo", "A@h:1"], "ERROR"),
        (["-q", "echo", "A@h:1", "--log-level", "INFO"], "INFO"),  # after the command wins
        (["dataset", "info", "x.h5", "-q"], "WARNING"),  # a nested sub-command too
    ],
)
def test_log_flags_before_or_after_the_command(argv: list[str], level: str | None) -> None:
    command = next(a for a in argv if a in ("echo", "dataset"))
    assert log_level(build_parser(command).parse_args(argv)) == level


def test_quiet_silences_info_lines_of_a_real_command(tmp_path: Path) -> None:
    loud = _cli("simulate", "--patients", "1", "--images-per-patient", "1", "--out",
                str(tmp_path / "a"), "--no-other-scanner")  # fmt: skip
    quiet = _cli("simulate", "--patients", "1", "--images-per-patient", "1", "--out",
                 str(tmp_path / "b"), "--no-other-scanner", "-q")  # fmt: skip
    assert loud.returncode == quiet.returncode == 0
    assert " INFO " in loud.stderr and " INFO " not in quiet.stderr


# -- progress bars ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["simulate"], ["convert"], ["dataset", "build"], ["train"], ["evaluate"]]
)
def test_long_commands_have_no_progress(command: list[str]) -> None:
    options = _option_strings(command)
    if command == ["evaluate"] and "no_progress" not in options:
        pytest.skip("evaluate shows no progress bar")
    assert options["no_progress"] == ["--no-progress"]


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    result = _cli("simulate", "--patients", "2", "--images-per-patient", "1", "--out",
                  str(tmp_path / "sim"), "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "it/s" not in result.stderr and "%|" not in result.stderr, result.stderr


# -- JSON summaries -----------------------------------------------------------------------------


def test_dataset_build_json_summary(tmp_path: Path) -> None:
    sim = _cli("simulate", "--patients", "1", "--images-per-patient", "1", "--out",
               str(tmp_path / "sim"), "-q")  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    built = _cli("dataset", "build", str(tmp_path / "d.h5"), "--folder", str(tmp_path / "sim"),
                 "--scale", "0", "70", "--organ", "prostate", "--json", "-q")  # fmt: skip
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)  # stdout is the JSON only
    assert summary["file"] == str(tmp_path / "d.h5")
    assert summary["labelled"] >= 1 and summary["rows"] >= summary["labelled"]
    assert "rejections" in summary and "seconds" in summary


# -- TensorFlow's start-up chatter --------------------------------------------------------------


def _import_tensorflow(level: str) -> str:
    code = (
        "import os, sys\n"
        "os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)\n"
        "from sswe_node.tf_chatter import silence\n"
        f"silence({level!r})\n"
        "import tensorflow\n"
        "print('after', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_tensorflow_chatter_is_silenced_unless_debug() -> None:
    quiet = _import_tensorflow("INFO")
    assert not [line for line in quiet.splitlines() if is_chatter(line)], quiet
    assert quiet.strip().splitlines()[-1] == "after"  # what is not chatter still comes out
    loud = _import_tensorflow("DEBUG")
    if not any(is_chatter(line) for line in loud.splitlines()):
        pytest.skip("this TensorFlow build prints no start-up chatter")


def test_echo_reaches_a_peer_given_by_its_ipv6_address() -> None:
    """The node's own SCP (as ``serve`` builds it) on ::1, called as ``SSWE_NODE@[::1]:PORT``."""
    import socket

    from sswe_node.config import DEFAULT_CONFIG_PATH, load_settings
    from sswe_node.node.scp import build_ae

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = build_ae(load_settings(DEFAULT_CONFIG_PATH, environ={})).start_server(
        ("::1", port), block=False
    )
    try:
        result = _cli("echo", f"SSWE_NODE@[::1]:{port}", "-q", "--aet", "IPV6_TEST")
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"SSWE_NODE@[::1]:{port}: C-ECHO success"
