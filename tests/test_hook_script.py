"""The onDefineDomain hook, run the way KubeVirt's sidecar-shim runs it.

The printed script runs as a real subprocess with one argv element for the VMI JSON and
one for the domain XML, from a directory holding files a glob would match. Its output
must equal its input except for <devices><emulator>.
"""

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from virt_debug.cli.scripts import hook_script_command
from virt_debug.launch import hook_script
from virt_debug.launch.hook import HookError, set_emulator

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
DOMAINS = sorted((SHARED / "data" / "kubevirt" / "domains").glob("*.xml"))
PYTHON39 = Path("/root/.pyenv/versions/3.9.18/bin/python3.9")
WRAPPER = "/var/run/virt-debug/bin/qemu-wrapper"
LIBVIRT_EMULATOR = "/usr/libexec/qemu-kvm"
VMI = '{"metadata": {"name": "testvmi", "annotations": {"a": "b * c"}}}'

TRICKY = (
    '<domain type="kvm" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">\r\n'
    "\t<name>default_tricky</name>\r\n"
    "\t<description>C:\\new\\table * price ? [ab] $HOME `id` é 日本 \t end"
    "</description>\r\n"
    "\t<!-- a comment with <devices> inside -->\r\n"
    "\t<os><type arch='x86_64' machine=\"q35\">hvm</type></os>\r\n"
    "\t<devices>\r\n"
    "\t\t<disk  device='disk' type=\"file\"><source file='/a b/*.img'/></disk>\r\n"
    "\t</devices>\r\n"
    "\t<qemu:commandline>\r\n"
    "\t\t<qemu:arg value='-smbios'/>\r\n"
    "\t\t<qemu:arg value='type=1,manufacturer=Acme Corp,product=a b  c'/>\r\n"
    "\t</qemu:commandline>\r\n"
    "</domain>"
)


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hook") / "onDefineDomain"
    path.write_text(hook_script(WRAPPER))
    path.chmod(0o755)
    return path


@pytest.fixture()
def glob_trap(tmp_path) -> Path:
    """A working directory where an unquoted * or ? would match files."""
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("")
    return tmp_path


def run_hook(script: Path, args: list[str], cwd: Path, python: str = sys.executable):
    return subprocess.run(
        [python, str(script), *args], cwd=cwd, capture_output=True, timeout=60
    )


def without_emulator_line(text: str) -> str:
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if "<emulator>" not in line]
    assert len(lines) - len(kept) == 1
    return "".join(kept)


def emulator_of(xml: str) -> str:
    devices = ET.fromstring(xml).find("devices")
    assert devices[0].tag == "emulator", "the emulator must be the first device"
    return devices[0].text


def test_the_shared_domains_are_there():
    assert len(DOMAINS) >= 5, f"expected KubeVirt's domain XMLs in {SHARED}"


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda p: p.name)
def test_hook_on_kubevirt_domains(domain, script, glob_trap):
    original = domain.read_text()
    assert "<emulator>" not in original

    first = run_hook(script, ["--vmi", VMI, "--domain", original], glob_trap)
    assert first.returncode == 0, first.stderr
    assert first.stderr == b""
    out = first.stdout.decode()
    assert without_emulator_line(out) == original
    assert emulator_of(out) == WRAPPER
    # Indented like its siblings.
    line = next(x for x in out.splitlines() if "<emulator>" in x)
    following = out.splitlines()[out.splitlines().index(line) + 1]
    indent = line[: len(line) - len(line.lstrip())]
    assert following.startswith(indent) and not following[len(indent)].isspace()

    again = run_hook(script, ["--vmi", VMI, "--domain", out], glob_trap)
    assert again.returncode == 0 and again.stdout.decode() == out

    filled = out.replace(f">{WRAPPER}<", f">{LIBVIRT_EMULATOR}<")
    third = run_hook(script, ["--vmi", VMI, "--domain", filled], glob_trap)
    assert third.returncode == 0 and third.stdout.decode() == out


@pytest.mark.parametrize(
    "python",
    [
        sys.executable,
        pytest.param(
            str(PYTHON39),
            marks=pytest.mark.skipif(
                not PYTHON39.exists(), reason=f"no python3.9 at {PYTHON39}"
            ),
        ),
    ],
    ids=["python3", "python3.9"],
)
def test_tricky_domain_survives_byte_for_byte(python, script, glob_trap):
    result = run_hook(script, ["--vmi", VMI, "--domain", TRICKY], glob_trap, python)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode("utf-8")

    expected = TRICKY.replace(
        "\t<devices>\r\n", f"\t<devices>\r\n\t\t<emulator>{WRAPPER}</emulator>\r\n"
    )
    assert out == expected
    rerun = run_hook(script, ["--vmi", VMI, "--domain", out], glob_trap, python)
    assert rerun.stdout.decode("utf-8") == expected


def test_any_other_emulator_is_replaced():
    xml = "<domain><devices>\n  <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
    xml += "  <disk/>\n</devices></domain>"
    out = set_emulator(xml, "/w")
    assert out == xml.replace("/usr/bin/qemu-system-x86_64", "/w")


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ("<domain><devices/></domain>", "<domain><devices><emulator>/w</emulator>"),
        (
            "<domain><devices><emulator/><disk/></devices></domain>",
            "<domain><devices><emulator>/w</emulator><disk/>",
        ),
        (
            "<domain>\n\t<devices>\n\t</devices>\n</domain>",
            "<domain>\n\t<devices>\n\t\t<emulator>/w</emulator>\n\t</devices>",
        ),
        (
            "<domain><devices a='>'><disk/></devices></domain>",
            "<domain><devices a='>'><emulator>/w</emulator><disk/>",
        ),
    ],
)
def test_odd_shapes_of_devices(xml, expected):
    out = set_emulator(xml, "/w")
    assert out.startswith(expected)
    assert set_emulator(out, "/w") == out


def test_emulator_path_is_escaped():
    path = "/opt/a&b <c> 'd\" e"
    out = set_emulator("<domain><devices/></domain>", path)
    assert emulator_of(out) == path
    assert hook_script(path).count("EMULATOR = ") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vmi", "{}", "--domain", "not xml"], "not well-formed"),
        (["--vmi", "{}", "--domain", "<domain><devices>"], "not well-formed"),
        (["--vmi", "{}", "--domain", "<vm><devices/></vm>"], "expected <domain>"),
        (["--vmi", "{}", "--domain", "<domain><os/></domain>"], "no <devices>"),
        (
            ["--vmi", "{}", "--domain", "<domain><devices/><devices/></domain>"],
            "2 <devices>",
        ),
        (["--vmi", "{}"], "missing --domain"),
        ([], "missing --domain"),
        # Entities expand to text the byte offsets do not match: a splice there
        # dropped a <disk> or left the XML unclosed. No DOCTYPE is accepted.
        (
            [
                "--domain",
                '<!DOCTYPE domain [<!ENTITY e "<emulator>/q</emulator>">]>'
                '<domain><devices>&e;<disk type="file"/></devices></domain>',
            ],
            "DOCTYPE",
        ),
        (
            [
                "--domain",
                '<!DOCTYPE domain [<!ENTITY d "<devices><emulator>/q</emulator>'
                '</devices>">]><domain>&d;</domain>',
            ],
            "DOCTYPE",
        ),
        (["--domain", "<!DOCTYPE domain><domain><devices/></domain>"], "DOCTYPE"),
    ],
)
def test_malformed_input_fails_cleanly(args, message, script, glob_trap):
    result = run_hook(script, args, glob_trap)
    assert result.returncode == 1
    assert result.stdout == b""
    err = result.stderr.decode()
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_arguments_are_ignored(script, glob_trap):
    xml = "<domain><devices/></domain>"
    args = ["--version", "--vmi", "--domain", "--extra", "x", f"--domain={xml}"]
    result = run_hook(script, args, glob_trap)
    assert result.returncode == 0, result.stderr
    assert emulator_of(result.stdout.decode()) == WRAPPER


def test_help_and_version_alone(script, glob_trap):
    for flag, word in (("--help", "usage"), ("--version", "hook")):
        result = run_hook(script, [flag], glob_trap)
        assert result.returncode == 0 and word in result.stdout.decode()


def test_hook_script_uses_only_python39_stdlib(script):
    vermin = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin is not installed (pip install vermin)")
    result = subprocess.run(
        [vermin, "-t=3.9-", "--no-tips", "--violations", "--eval-annotations", script],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # And it imports nothing from virt-debug or outside the standard library.
    tree = ast.parse(script.read_text())
    imports = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add(node.module.split(".")[0])
    assert imports <= {"sys", "xml"}


XML_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=40,
).filter(lambda s: all(c in "\t\n\r" or ord(c) >= 0x20 for c in s))


@settings(max_examples=150, deadline=None)
@given(description=XML_TEXT, indent=st.sampled_from(["\t", "  ", "", "\r\n\t"]))
def test_any_text_elsewhere_is_kept(description, indent):
    from xml.sax.saxutils import escape

    body = escape(description)
    xml = f"<domain><description>{body}</description>{indent}<devices>{indent}"
    xml += f"<disk/>{indent}</devices></domain>"
    try:
        out = set_emulator(xml, "/w")
    except HookError:
        pytest.fail(f"valid XML rejected: {xml!r}")
    assert out.replace("<emulator>/w</emulator>" + indent, "", 1) == xml
    assert set_emulator(out, "/w") == out


@pytest.mark.parametrize(
    "path", ["/a\x01b", "/a\rb", "/a\nb", "/a\udcffb", "/a\x7fb", "relative"]
)
def test_emulator_paths_xml_cannot_carry_are_refused(path):
    # Each would come back from libvirt as another path, or as XML it rejects.
    with pytest.raises(HookError, match="emulator path"):
        set_emulator("<domain><devices/></domain>", path)
    result = CliRunner().invoke(hook_script_command, ["--emulator", path])
    assert result.exit_code == 2
    assert "--emulator" in result.output and "EMULATOR =" not in result.output


def test_emulator_path_beyond_the_basic_plane_is_kept():
    out = set_emulator("<domain><devices/></domain>", "/opt/\U0001f600/qemu")
    assert emulator_of(out) == "/opt/\U0001f600/qemu"
