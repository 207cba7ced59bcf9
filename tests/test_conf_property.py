"""The property of the conf's trust boundary, over every string-valued key:

    what systemd reads back (``systemd-analyze verify``, its debug dump and
    parsed "Command Line:"s) equals what the conf said, or ``check`` refuses
    it at FILE:LINE:COL; and ``check`` and ``render`` never disagree.

Values come from the whole of Unicode, with every line and space separator
and the characters systemd and YAML treat specially, written in every YAML
scalar style (plain, single-quoted, double-quoted, literal, folded). "What
the conf said" is YAML's string for a quoted or block scalar, and the text as
written for a plain one (YAML 1.1 reads 0077 as 63: unitgen must then refuse).

Profiles (HYPOTHESIS_PROFILE): the default run takes seconds;
``HYPOTHESIS_PROFILE=nightly python -m pytest tests/test_conf_property.py``
tries 2,000 values per property.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from unitgen import systemd
from unitgen.cli import cli
from unitgen_probe import Target, format_argv

from clirunner import cli_runner
from unitverify import expected_dump, verify

settings.register_profile("default", max_examples=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("nightly", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

PROBE = "/bin/true"
# Every line and paragraph separator, every Unicode space, controls, and what
# systemd (%, $, \, quotes, ;) or YAML (:, #, -, ?, &, *, !, |, >, ', ", %, @, `) reads specially.
SEPARATORS = ["\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
SPACES = [" ", "\t", "\u00a0", "\u1680", *map(chr, range(0x2000, 0x200B)), "\u202f", "\u205f", "\u3000",
          "\u200b", "\ufeff"]
SPECIAL = ["%", "%%", "%n", "%Z", "%h", "$", "$$", "${X}", "\\", "\\n", '"', "'", "`", ";", "#", " #", ": ",
           "-", "? ", "&a", "*a", "!", "|", ">", "@", "=", "/", "~", "0077", "1:30", "yes", "off", "null",
           "0x1f", ".nan", "[", "{", "}", ",", "\x00", "\x01", "\x7f", "\x9b", "é", "日本", "🚀", "\u202e"]
text = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10),
    st.lists(st.one_of(st.sampled_from(SEPARATORS + SPACES + SPECIAL),
                       st.text(alphabet="abcXYZ019./", min_size=1, max_size=3)), max_size=6).map("".join),
)
STYLES = ["plain", "single", "double", "literal", "folded"]
# YAML's printable set (YAML 1.1, 5.1); anything else must be an escape in double quotes.
_YAML_PRINTABLE = re.compile("[\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*\\Z")
_YAML_BREAKS = re.compile("[\n\r\x85\u2028\u2029]")


def yaml_scalar(value: str, style: str, indent: str) -> str:
    """``value`` written as a YAML scalar of ``style`` (plain or block when possible)."""
    printable = bool(_YAML_PRINTABLE.match(value)) and "\ufeff" not in value
    if style == "plain" and printable and value and not _YAML_BREAKS.search(value):
        return value
    if style == "single" and printable and not _YAML_BREAKS.search(value):
        return "'" + value.replace("'", "''") + "'"
    if style in ("literal", "folded") and printable and value and "\n" in value.strip("\n") \
            and not re.search("[\r\x85\u2028\u2029]", value) and not value[0] in " \t":
        body = value.split("\n")
        return ("|" if style == "literal" else ">") + "-\n" + "\n".join(indent + line for line in body)
    return double_quoted(value)


def double_quoted(value: str) -> str:
    out = []
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or 0x7f <= code <= 0x9f or ch in "\u2028\u2029\ufeff" or 0xd800 <= code <= 0xdfff \
                or code in (0xfffe, 0xffff):
            out.append(f"\\x{code:02x}" if code <= 0xff else f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# Every string-valued key of a service: (key, how its value is placed, how systemd's reading is found).
KEYS = ["description", "user", "group", "working_dir", "pid_file", "environment_file", "environment",
        "exec_arg", "exec_program", "script", "raw_description", "service_name", "dep_name", "dep_url",
        "dep_exec", "health"]


def conf_text(key: str, value: str, style: str) -> str:
    """A native conf with ``value`` (as the YAML scalar ``style``) at ``key``."""
    i4, i6 = " " * 4, " " * 6
    scalar = lambda prefix="", indent=i6: yaml_scalar(prefix + value, style, indent)  # noqa: E731
    name = "web"
    lines = ["version: 1", "services:"]
    body = {"exec": "[/bin/true]", "user": "daemon"}
    extra: list = []
    if key == "service_name":
        name = scalar(indent="    ")
    elif key in ("description", "user", "group", "script"):
        body[key] = scalar()
        if key == "script":
            del body["exec"]
    elif key == "working_dir":
        body[key] = scalar("/srv/")
    elif key == "pid_file":
        body[key], body["type"] = scalar("/run/"), "forking"
    elif key == "environment_file":
        body[key] = scalar("/etc/")
    elif key == "environment":
        extra = [f"{i4}environment:", f"{i6}VAR: {yaml_scalar(value, style, ' ' * 8)}"]
    elif key == "exec_arg":
        extra = [f"{i4}exec:", f"{i6}- /bin/echo", f"{i6}- {yaml_scalar(value, style, ' ' * 8)}"]
        del body["exec"]
    elif key == "exec_program":
        extra = [f"{i4}exec:", f"{i6}- {yaml_scalar('/usr/bin/' + value, style, ' ' * 8)}"]
        del body["exec"]
    elif key == "raw_description":
        extra = [f"{i4}systemd:", f"{i6}Unit:", f"{' ' * 8}Description: {yaml_scalar(value, style, ' ' * 10)}"]
    elif key in ("dep_name", "dep_url", "dep_exec"):
        item = {"dep_name": ("tcp: db.example:5432", "name"), "dep_url": ("http", None),
                "dep_exec": ("exec", None)}[key]
        if key == "dep_name":
            extra = [f"{i4}deps:", f"{i6}- tcp: db.example:5432", f"{' ' * 8}name: {yaml_scalar(value, style, ' ' * 10)}"]
        elif key == "dep_url":
            extra = [f"{i4}deps:", f"{i6}- http: {yaml_scalar('http://h.example/' + value, style, ' ' * 10)}"]
        else:
            extra = [f"{i4}deps:", f"{i6}- exec: {yaml_scalar(value, style, ' ' * 10)}"]
        del item
    elif key == "health":
        body["health"] = yaml_scalar("http://{host}:80/" + value, style, i6)
    lines.append(f"  {name}:")
    lines += [f"{i4}{k}: {v}" for k, v in body.items()] + extra
    if key == "health":
        lines += ["  api:", f"{i4}exec: [/bin/true]", f"{i4}user: daemon", f"{i4}deps: [{{service: web}}]"]
    return "\n".join(lines) + "\n"


def said(key: str, value: str, style: str, text: str):
    """(what the conf said at ``key``, or None if YAML cannot read the file)."""
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return None
    written = yaml_scalar(value, style, "")
    plain = written == value  # written plain: the conf said this text, whatever YAML 1.1 makes of it
    services = data["services"]
    if key == "service_name":
        name = next(iter(services))
        return name if isinstance(name, str) else value
    service = services["web"]
    found = {
        "description": lambda: service["description"],
        "user": lambda: service["user"],
        "group": lambda: service["group"],
        "script": lambda: service["script"],
        "working_dir": lambda: service["working_dir"],
        "pid_file": lambda: service["pid_file"],
        "environment_file": lambda: service["environment_file"],
        "environment": lambda: service["environment"]["VAR"],
        "exec_arg": lambda: service["exec"][1],
        "exec_program": lambda: service["exec"][0],
        "raw_description": lambda: service["systemd"]["Unit"]["Description"],
        "dep_name": lambda: service["deps"][0]["name"],
        "dep_url": lambda: service["deps"][0]["http"],
        "dep_exec": lambda: service["deps"][0]["exec"],
        "health": lambda: service["health"],
    }[key]()
    prefix = {"working_dir": "/srv/", "pid_file": "/run/", "environment_file": "/etc/", "exec_program": "/usr/bin/",
              "dep_url": "http://h.example/", "health": "http://{host}:80/"}.get(key, "")
    if plain and not isinstance(found, str):  # YAML 1.1 typed the text (0077, yes, ~): the conf said
        return re.split(r"[ \t]+#", prefix + value)[0].strip(" \t")  # the text, less blanks and a comment
    return found  # YAML's string, with its own rules (a plain scalar loses its trailing blanks)


def invoke(command: str, conf: Path, *args: str):
    return cli_runner().invoke(cli, [command, str(conf), "--probe", PROBE, *args])


def assert_refused_at_its_place(conf: Path, result) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert lines and all(re.match(re.escape(str(conf)) + r":\d+:\d+: ", line) or line.startswith("... and ")
                         for line in lines if "warning:" not in line), lines


def read_back(key: str, out: Path, conf_value, service_name: str):
    """What systemd made of the key's value, and what it should equal."""
    unit = out / systemd.unit_name(service_name)
    checked = verify(sorted(out.glob("*.service")))
    assert checked.stderr == "", checked.stderr
    dump = checked.dump
    if key in ("description", "user", "group", "working_dir", "environment_file"):
        setting = {"description": "Description", "user": "User", "group": "Group", "working_dir": "WorkingDirectory",
                   "environment_file": "EnvironmentFile"}[key]
        assert checked.setting(setting) == [conf_value], (setting, checked.setting(setting), conf_value)
    elif key == "environment":
        assert f"\t\tEnvironment: VAR={conf_value}\n" in dump
    elif key == "exec_arg":
        assert checked.command_lines == [expected_dump(["/bin/echo", conf_value])]
    elif key == "exec_program":
        assert checked.command_lines == [expected_dump([conf_value])]
    elif key == "script":  # the shell that runs it is unitgen's choice; the line is the conf's
        assert [c[1:] for c in checked.command_lines] == [expected_dump(["-c", conf_value])]
    elif key == "pid_file":  # unitgen-launch reads the daemon's own PID file (see README, Autoheal)
        launch = checked.command_lines[-1]
        assert launch[launch.index("--from-pid-file") + 1] == expected_dump([conf_value])[0]
    elif key == "raw_description":
        if "%" not in conf_value and conf_value:  # systemd syntax there: specifiers resolve, "" resets
            assert checked.setting("Description") == [conf_value]
    elif key == "service_name":
        assert unit.exists() and unit.name == systemd.unit_name(conf_value)
    elif key in ("dep_name", "dep_url", "dep_exec"):
        target = {"dep_name": lambda: Target("tcp", "db.example:5432", name=conf_value),
                  "dep_url": lambda: Target("http", conf_value),
                  "dep_exec": lambda: Target("exec", conf_value)}[key]()
        probe = [PROBE, *format_argv([target], deadline=60, timeout=2)]
        assert checked.command_lines == [expected_dump(probe), expected_dump(["/bin/true"])]
    elif key == "health":
        api = [c for c in checked.command_lines if c[0] == PROBE]
        target = Target("http", conf_value.replace("{host}", "localhost"), name="web")
        assert any(c == expected_dump([PROBE, *format_argv([target], deadline=60, timeout=2)]) for c in api), api


@given(st.sampled_from(KEYS), text, st.sampled_from(STYLES))
@example("description", "Web\u2028[Install]\u2028Alias=systemd-hostnamed.service", "double")
@example("environment", "0777", "plain")
@example("raw_description", "0077", "plain")
@example("description", "\u00a0Web", "double")
@example("exec_arg", "a\u2028b\x85c", "double")
@example("user", "0", "single")
@example("working_dir", "a\u2029b", "plain")
@example("description", "yes", "plain")
@example("dep_url", "a", "plain")
@example("exec_program", '"', "plain")
@example("script", "A ", "plain")
@example("environment", "0 ", "plain")
@example("service_name", "A ", "plain")
@example("service_name", ":", "plain")
@example("environment", "0 #c", "plain")
def test_systemd_reads_what_the_conf_said_or_check_refuses_it(key, value, style):
    work = Path(tempfile.mkdtemp(prefix="unitgen-property-"))
    text = conf_text(key, value, style)
    conf = work / "conf.yaml"
    conf.write_bytes(text.encode("utf-8", "surrogatepass"))
    out = work / "out"
    checked = invoke("check", conf)
    rendered = invoke("render", conf, "-o", str(out))
    assert checked.exit_code == rendered.exit_code, (checked.output, rendered.output)  # never disagree
    if rendered.exit_code != 0:
        assert_refused_at_its_place(conf, rendered)
        assert_refused_at_its_place(conf, checked)
        assert not out.exists() or not any(out.glob("*.service"))
        return
    conf_value = said(key, value, style, text)
    assert conf_value is not None, "YAML cannot read the file, yet unitgen did"
    assert isinstance(conf_value, str), f"unitgen accepted {conf_value!r} where the conf said text"
    service_name = conf_value if key == "service_name" else "web"
    read_back(key, out, conf_value, service_name)
