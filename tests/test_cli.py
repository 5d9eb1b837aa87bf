import subprocess
import sys

import pytest

from sswe_node.cli import COMMAND_ORDER, main


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMAND_ORDER:
        assert name in out


@pytest.mark.parametrize("name", COMMAND_ORDER)
def test_each_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: sswe-node " + name in capsys.readouterr().out


def test_console_script_runs_without_tensorflow() -> None:
    code = "import sys; from sswe_node.cli import main; main(['--version'])"
    result = subprocess.run([sys.executable, "-c", code + "\n"], capture_output=True, text=True)
    assert "sswe-node" in result.stdout
    check = subprocess.run(
        [sys.executable, "-c", "import sswe_node.cli, sys; print('tensorflow' in sys.modules)"],
        capture_output=True,
        text=True,
    )
    assert check.stdout.strip() == "False"


def test_top_level_help_before_a_command_still_lists_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help", "cases"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "C-ECHO a DICOM peer" in out and "list and filter cases" in out


def test_a_command_imports_only_its_own_module() -> None:
    code = (
        "import sys\n"
        "from sswe_node.cli import main\n"
        "try:\n"
        "    main(['cases', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('training.train', 'sswe_node.node.app', 'sswe_node.node.echo')"
        " if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "usage: sswe-node cases" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "[]"
