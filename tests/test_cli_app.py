import subprocess
import sys


def test_help_lists_every_verb(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for verb in ("train", "sample", "evaluate", "privacy", "anonymize", "augment", "masks",
                 "cohort", "demo", "segbench"):
        assert verb in result.output


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "synthkit", "--help"], check=False, capture_output=True, text=True)
    assert out.returncode == 0
    assert "cohort" in out.stdout
