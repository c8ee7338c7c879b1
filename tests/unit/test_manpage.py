"""scripts/build_manpage.py: the man page and the bash/zsh completions are generated from the CLI's
parser and cover every command and every option; bash completes for real; groff and zsh accept
the files. (groff-base and zsh are installed by .ci/run; under CI a missing one fails.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import build_manpage  # noqa: E402
from twinwall.cli import COMMANDS  # noqa: E402


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but {tool} is missing (see .ci/run)")
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("share")
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_manpage.py"), "-o", str(out)], check=True,
                   capture_output=True)
    return out


def test_every_command_and_option_is_covered(built: Path) -> None:
    man = (built / "man/man1/twinwall.1").read_text()
    bash = (built / "bash-completion/completions/twinwall").read_text()
    zsh = (built / "zsh/site-functions/_twinwall").read_text()
    _, subs = build_manpage.command_parsers()
    assert sorted(subs) == sorted(c[0] for c in COMMANDS) and "fleet" in subs
    for name, parser in subs.items():
        assert f'.SS "twinwall {name}"' in man
        assert f"    {name})" in bash and f"                {name}) _arguments" in zsh
        flags = [o for a in build_manpage.options(parser) for o in a.option_strings]
        assert flags, name
        for flag in flags:
            assert f"\\fB{flag.replace('-', chr(92) + '-')}\\fR" in man, (name, flag)
            assert flag in bash and f"{flag}[" in zsh, (name, flag)


def test_man_page_renders(built: Path) -> None:
    groff = _need("groff")
    res = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(built / "man/man1/twinwall.1")],
                         capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == "", res.stderr


def _complete(built: Path, *words: str) -> list:
    script = (f'source "{built}/bash-completion/completions/twinwall"; COMP_WORDS=({" ".join(repr(w) for w in words)}); '
              f'COMP_CWORD={len(words) - 1}; _twinwall; printf "%s\\n" "${{COMPREPLY[@]}}"')
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=str(built))
    assert res.returncode == 0, res.stderr
    return [w for w in res.stdout.splitlines() if w]


def test_bash_completes_commands_options_and_choices(built: Path) -> None:
    assert "fleet" in _complete(built, "twinwall", "fl")
    assert _complete(built, "twinwall", "fleet", "--fo") == ["--format"]
    assert set(_complete(built, "twinwall", "fleet", "--fail-on", "")) >= {"high", "never"}
    assert "table" in _complete(built, "twinwall", "audit", "--format", "")
    assert "man" in _complete(built, "twinwall", "audit", "--snapshot", "")  # a file name (built/man)


def test_zsh_accepts_the_completion(built: Path) -> None:
    zsh = _need("zsh")
    res = subprocess.run([zsh, "-n", str(built / "zsh/site-functions/_twinwall")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # loaded by compinit from an fpath directory, the function is defined under its #compdef name
    script = (f'fpath=("{built}/zsh/site-functions" $fpath); autoload -Uz compinit; '
              f'compinit -u -d "{built}/zcompdump"; print -r -- $_comps[twinwall]')
    res = subprocess.run([zsh, "-f", "-c", script], capture_output=True, text=True, env={"HOME": str(built), "PATH": os.environ["PATH"]})
    assert res.returncode == 0 and res.stdout.strip() == "_twinwall", res.stdout + res.stderr
