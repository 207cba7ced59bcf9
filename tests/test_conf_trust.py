"""The conf is a trust boundary: every value is read once, with systemd's own
rules, and whatever systemd (or YAML 1.1) would read differently from what the
conf said is refused at FILE:LINE:COL, never changed silently. One test per
class of problem, each with several members of its class."""

from __future__ import annotations

import re

import pytest

from unitgen import config
from unitgen.cli import cli
from clirunner import cli_runner


def run(tmp_path, text, *args, command="render"):
    conf = tmp_path / "conf.yaml"
    conf.write_text(text, encoding="utf-8")
    extra = ["--probe", "/bin/true"] if command in ("render", "check") else []
    result = cli_runner().invoke(cli, [command, str(conf), *extra, *args])
    return conf, result


def native(service: str) -> str:
    return "version: 1\nservices:\n  web: " + service + "\n"


def refused_at(tmp_path, text, line, col, *words):
    """Both check and render refuse ``text`` with exit 2 at LINE:COL, saying ``words``."""
    for command in ("check", "render"):
        conf, result = run(tmp_path, text, command=command)
        assert result.exit_code == 2, (command, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        first = result.stderr.splitlines()[0]
        assert first.startswith(f"{conf}:{line}:{col}: "), (command, result.stderr)
        for word in words:
            assert word in result.stderr, (command, word, result.stderr)


# --- YAML 1.1 surprises ---------------------------------------------------------

@pytest.mark.parametrize("value, reading", [
    ("0077", "63"), ("0777", "511"), ("1:30", "90"), ("0x1f", "31"), ("1_000", "1000"),
    ("0b101", "5"), ("-1:10", "-70"), ("00.5", "0.5"), ("1_0.5", "10.5"),
])
@pytest.mark.parametrize("where", [
    "{{exec: [/bin/true], user: a, environment: {{MODE: {v}}}}}",
    "{{exec: [/bin/true], user: a, systemd: {{Service: {{UMask: {v}}}}}}}",
    "{{exec: [/bin/true], user: a, systemd: {{Service: {{UMask: [{v}]}}}}}}",
    "{{exec: [/bin/true], user: a, restart_sec: {v}}}",
])
def test_a_number_yaml_reads_differently_from_its_text_says_quote_it(tmp_path, value, reading, where):
    text = native(where.format(v=value))
    col = text.splitlines()[2].index(value) + 1
    refused_at(tmp_path, text, 3, col, "quote it", f"reads as the number {reading}")


def test_the_same_numbers_quoted_are_carried_as_written(tmp_path):
    conf, result = run(tmp_path, native(
        "{exec: [/bin/true], user: a, environment: {MODE: '0777', T: '1:30', N: 8080},"
        " systemd: {Service: {UMask: '0077', Nice: -5}}}"))
    assert result.exit_code == 0, result.output
    assert "UMask=0077\n" in result.stdout and "Nice=-5\n" in result.stdout
    assert 'Environment="MODE=0777"' in result.stdout and 'Environment="T=1:30"' in result.stdout
    assert 'Environment="N=8080"' in result.stdout


@pytest.mark.parametrize("value, key", [("0x50", "port"), ("0070", "port"), ("1:20", "port")])
def test_a_port_in_octal_hex_or_sexagesimal_is_refused(tmp_path, value, key):
    text = native(f"{{exec: [/bin/true], user: a, deps: [{{host: db, {key}: {value}}}]}}")
    refused_at(tmp_path, text, 3, text.splitlines()[2].index(value) + 1, "quote it")


@pytest.mark.parametrize("key", ["~", "null", "Null", "NULL"])
def test_a_null_key_is_refused_and_shifts_nothing(tmp_path, key):
    entry = f"{key}: 1"
    text = native("{exec: [/bin/true], user: a}") + f"  api:\n    exec: [/bin/true]\n    user: a\n" \
        f"    environment:\n      {entry}\n      A: b\n"
    conf, result = run(tmp_path, text, command="check")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{conf}:8:7: ") and "null" in lines[0] and "quote it" in lines[0], lines
    assert len(lines) == 1, lines  # nothing shifted: A: b is fine


@pytest.mark.parametrize("word", ["yes", "No", "on", "OFF", "true", "~", "null"])
@pytest.mark.parametrize("key", ["description", "user", "working_dir", "script"])
def test_a_word_yaml_reads_as_a_boolean_or_null_where_text_is_needed(tmp_path, word, key):
    user = "" if key == "user" else "user: a, "
    service = f"{{exec: [/bin/true], {user}{key}: {word}}}" if key != "script" else f"{{user: a, script: {word}}}"
    text = native(service)
    refused_at(tmp_path, text, 3, text.splitlines()[2].index(f" {word}}}") + 2, "expected text")


def test_booleans_in_raw_directives_are_written_as_the_conf_wrote_them(tmp_path):
    text = ("version: 1\nx-on: &on On\ndefaults: {systemd: {Service: {NoNewPrivileges: TRUE}}}\n"
            "services:\n  web: {exec: [/bin/true], user: a, systemd: {Service: {ProtectHome: [*on, off],"
            " SyslogLevelPrefix: yes}}}\n")
    conf, result = run(tmp_path, text)
    assert result.exit_code == 0, result.output
    for line in ("NoNewPrivileges=TRUE", "ProtectHome=On", "ProtectHome=off", "SyslogLevelPrefix=yes"):
        assert line + "\n" in result.stdout


# --- sudo -u: lifted into User= only when that provably keeps the meaning -------

@pytest.mark.parametrize("script, why", [
    ("sudo -u daemon echo a#b && /usr/bin/id", "first command"),
    ("sudo -u daemon /bin/x a#b && /usr/bin/id", "first command"),
    ("sudo -u daemon /bin/x #c\n/usr/bin/id", "first command"),
    ("sudo -u 0 /usr/bin/id", "user named '0'"),
    ("sudo -u 1000 /usr/bin/id", "user named '1000'"),
    ("sudo -u '#0' /usr/bin/id", "not a plain user name"),
    ("sudo -u daemon ~/bin/run", "simple command"),
    ("sudo -u daemon /bin/ls *", "simple command"),
    ("sudo -u daemon /bin/echo $HOME", "simple command"),
    ('sudo -u daemon /bin/echo "$HOME"', "simple command"),
    ("sudo -u daemon cd /tmp", "simple command"),
    ("sudo -u daemon FOO=1 /bin/run", "simple command"),
    ("sudo -u daemon /bin/run\\ x", "simple command"),
    ("sudo -u daemon /bin/run 'unterminated", "simple command"),
    ("sudo -u daemon /bin/run 2>/root/log", "simple command"),
])
def test_sudo_is_kept_whole_unless_user_keeps_the_meaning(script, why):
    user, command, kept = config.split_sudo(script)
    assert (user, command) == (None, script)
    assert kept and why in kept


@pytest.mark.parametrize("script, user, command", [
    ("sudo -u daemon /usr/bin/id", "daemon", "/usr/bin/id"),
    ("sudo -u www-data /srv/bin/run --port=80 a,b", "www-data", "/srv/bin/run --port=80 a,b"),
    ("sudo -u admin '/opt/my app/run' \"a # b; c\"", "admin", "'/opt/my app/run' \"a # b; c\""),
    ("sudo -u root /bin/run", "root", "/bin/run"),
])
def test_sudo_becomes_user_for_one_plain_command(script, user, command):
    assert config.split_sudo(script) == (user, command, None)


def check_warnings(tmp_path, text):
    conf, result = run(tmp_path, text, command="check")
    assert result.exit_code == 0, result.output
    return [line for line in result.stderr.splitlines() if "warning:" in line]


@pytest.mark.parametrize("service, says", [
    ("{exec: [/bin/true]}", "runs as root"),
    ("{exec: [/bin/true], user: root}", "runs as root"),
    ("{exec: [/bin/true], user: '0'}", "runs as root"),
    ("{script: 'sudo -u 0 /usr/bin/id'}", "runs as root"),
    ("{script: \"sudo -u '#0' /usr/bin/id\", user: a}", "through sudo"),
    ("{script: 'sudo /usr/bin/id', user: a}", "through sudo"),
    ("{script: '/bin/a && sudo -u root /usr/bin/id', user: a}", "through sudo"),
    ("{exec: [/bin/true], user: a, systemd: {Service: {User: root}}}", "raw User="),
    ("{exec: [/bin/true], user: a, systemd: {Service: {ExecStartPre: '+/bin/setup'}}}", "runs as root"),
    ("{exec: [/bin/true], user: a, systemd: {Service: {ExecStartPost: ['/bin/ok', '-!/bin/x']}}}", "runs as root"),
    ("{exec: [/bin/true], user: a, systemd: {Service: {ExecStartPre: '!!/bin/x'}}}", "runs as root"),
    ("{exec: [/bin/true], user: a, systemd: {Service: {PermissionsStartOnly: true}}}", "as root"),
])
def test_check_warns_about_everything_that_runs_as_root(tmp_path, service, says):
    warnings = check_warnings(tmp_path, native(service))
    assert any(says in w for w in warnings), warnings


def test_no_root_warning_for_a_service_with_a_user(tmp_path):
    assert check_warnings(tmp_path, native("{exec: [/bin/true], user: daemon, "
                                           "systemd: {Service: {ExecStartPre: '-/bin/x'}}}")) == []


def test_a_warning_cannot_forge_an_output_line(tmp_path):
    warnings = check_warnings(tmp_path, 'version: 1\nservices:\n  "a\\nconf.yaml:1:1: ok\\u2028x": '
                                        '{exec: [/bin/true]}\n')
    conf, result = run(tmp_path, 'version: 1\nservices:\n  "a\\nconf.yaml:1:1: ok\\u2028x": '
                                 '{exec: [/bin/true]}\n', command="check")
    assert all(line.startswith(str(conf)) or line.endswith("ok, 1 service (native format)")
               for line in result.output.splitlines()), result.output
    assert warnings and "\\n" in warnings[0] and "\\u2028" in warnings[0]


# --- secrets --------------------------------------------------------------------

@pytest.mark.parametrize("password", ["s3cret", "p#ss", "p/ss", "p@ss", "p?ss", "a:b@c"])
def test_a_url_password_is_never_printed(tmp_path, password):
    text = native("{exec: [/bin/true], user: a, deps: [{http: 'http://user:" + password +
                  "@db.example:70000/'}], environment: {X: y}}")
    for command in ("check", "render"):
        conf, result = run(tmp_path, text, command=command)
        assert result.exit_code == 2
        assert password not in result.output and "user:" not in result.output.replace("services.web", "")


def test_credentials_in_a_health_url_are_warned_about_where_they_land(tmp_path):
    text = ("version: 1\nservices:\n  db: {exec: [/bin/true], user: a, health: 'http://u:p%23w@{host}:80/'}\n"
            "  web: {exec: [/bin/true], user: a, deps: [{service: db}]}\n")
    warnings = check_warnings(tmp_path, text)
    assert any("health URL holds credentials" in w and "web" in w for w in warnings), warnings
    assert not any("p%23w" in w for w in warnings)


def test_a_huge_value_is_quoted_short_however_often_it_is_aliased(tmp_path):
    big = "x" * 1_000_000
    services = "".join(f"  s{i}: {{exec: [/bin/true], user: *big, description: *big}}\n" for i in range(15))
    text = f'version: 1\nx-big: &big "{big}\\n"\nservices:\n{services}'
    conf, result = run(tmp_path, text, command="check")
    assert result.exit_code == 2
    assert len(result.stderr) < 30_000, len(result.stderr)
    assert len(result.stderr.splitlines()) == 30


# --- systemd's own rules: programs, ids, spans, lines, separators ------------------

@pytest.mark.parametrize("program", ["bin/true", "./x", "~/x", "%h/x", "..", "/usr/bin/", '/usr/bin/a"b',
                                     "/usr/bin/a''b", "/usr/bin/a\\b"])
def test_a_program_systemd_would_not_run_as_meant_is_refused(tmp_path, program):
    text = native(f"{{exec: ['{program}'], user: a}}")
    refused_at(tmp_path, text, 3, text.splitlines()[2].index(f"['{program}']") + 1, "program")


@pytest.mark.parametrize("line", ["ExecStartPost: bin/x", "ExecStartPre: '-./x'", "ExecStopPost: '+~/x y'"])
def test_a_raw_exec_line_with_a_relative_program_is_refused(tmp_path, line):
    text = native(f"{{exec: [/bin/true], user: a, systemd: {{Service: {{{line}}}}}}}")
    refused_at(tmp_path, text, 3, text.splitlines()[2].index(line.split(": ")[1]) + 1, "relative path")


@pytest.mark.parametrize("user", ["'65535'", "'4294967295'", "'00'", "'007'", "'99999999999'", "'-1'", "'+5'"])
@pytest.mark.parametrize("key", ["user", "group"])
def test_an_id_systemd_refuses_is_refused(tmp_path, user, key):
    other = "user: a, " if key == "group" else ""
    text = native(f"{{exec: [/bin/true], {other}{key}: {user}}}")
    refused_at(tmp_path, text, 3, text.splitlines()[2].index(user) + 1, "systemd accepts")


@pytest.mark.parametrize("user", ["'0'", "'65534'", "'4294967294'", "daemon", "_x-1"])
def test_an_id_systemd_accepts_is_kept(tmp_path, user):
    conf, result = run(tmp_path, native(f"{{exec: [/bin/true], user: {user}}}"))
    assert result.exit_code == 0, result.output
    assert f"User={user.strip(chr(39))}\n" in result.stdout


@pytest.mark.parametrize("span", [".nan", ".inf", "-.inf", "1.0e308", "'99999999999999999999d'", "0.0000001",
                                  "'1.5us'", "'0.0000005s'", "1.0e-7"])
@pytest.mark.parametrize("key", ["restart_sec", "start_time", "probe: {deadline", "loss_threshold: {seconds"])
def test_a_span_systemd_would_read_differently_is_refused(tmp_path, span, key):
    value = f"{key}: {span}}}" if "{" in key else f"{key}: {span}"
    text = native(f"{{exec: [/bin/true], user: a, {value}}}")
    refused_at(tmp_path, text, 3, text.splitlines()[2].index(span) + 1, "span")


def test_a_dependency_timeout_that_is_not_finite_is_refused(tmp_path):
    text = native("{exec: [/bin/true], user: a, deps: [{tcp: 'db:5432', timeout: .nan}]}")
    refused_at(tmp_path, text, 3, text.splitlines()[2].index(".nan") + 1, "span")


SEPARATORS = ["\\u2028", "\\u2029", "\\x85", "\\v", "\\f", "\\x1c", "\\x9b", "\\r", "\\n"]


@pytest.mark.parametrize("sep", SEPARATORS)
@pytest.mark.parametrize("key, before, after", [
    ("description", "Web", "[Install]"),
    ("working_dir", "/srv/a", "b"),
    ("environment_file", "/etc/a", "b"),
    ("pid_file", "/run/a", "b"),
    ("systemd: {Install: {Alias", "x.service", "Alias=systemd-hostnamed.service"),
    ("systemd: {Service: {Nice", "5", "User=root"),
    ("systemd: {Unit: {Documentation", "https://x", "[Install]"),
])
def test_no_character_can_inject_a_line_or_a_section(tmp_path, sep, key, before, after):
    value = f'"{before}{sep}{after}"'
    entry = f"{key}: {value}}}}}" if "{" in key else f"{key}: {value}"
    extra = ", type: forking" if key == "pid_file" else ""
    text = native(f"{{exec: [/bin/true], user: a{extra}, {entry}}}")
    refused_at(tmp_path, text, 3, text.splitlines()[2].index(value) + 1)


def test_separators_in_exec_and_environment_are_escaped_and_read_back_exactly(tmp_path):
    from unitverify import verify

    conf, result = run(tmp_path, native('{exec: [/bin/echo, "a\\u2028b\\x85c\\vd\\u00a0e"], user: a, '
                                        'environment: {X: "1\\u2029\\f2"}}'), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    checked = verify([tmp_path / "out" / "web.service"])
    assert checked.stderr == ""
    assert checked.command_lines == [["/bin/echo", "a\u2028b\x85c\vd\u00a0e"]]
    assert "\t\tEnvironment: X=1\u2029\f2\n" in checked.dump


def test_systemd_keeps_a_leading_nbsp_so_unitgen_does_too(tmp_path):
    from unitverify import verify

    conf, result = run(tmp_path, native('{exec: [/bin/true], user: a, description: "\\u00a0Web\\u00a0"}'),
                       "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    checked = verify([tmp_path / "out" / "web.service"])
    assert checked.stderr == "" and checked.setting("Description") == ["\u00a0Web\u00a0"]


@pytest.mark.parametrize("where", [
    "{{exec: [/bin/true, '{big}'], user: a}}",
    "{{exec: [/bin/true], user: a, environment: {{X: '{big}'}}}}",
    "{{exec: [/bin/true], user: a, description: '{big}'}}",
    "{{exec: [/bin/true], user: a, systemd: {{Service: {{Nice: '{big}'}}}}}}",
])
def test_a_value_over_systemds_line_limit_is_refused_at_its_place(tmp_path, where):
    text = native(where.format(big="x" * (1024 * 1024)))
    col = text.splitlines()[2].index("[/bin/true, " if "true, " in where else "'xxx") + 1
    refused_at(tmp_path, text, 3, col, "1 MiB")


def test_a_probe_line_over_systemds_limit_is_refused_by_check_and_render(tmp_path):
    deps = ", ".join(f"{{http: 'http://h{i}.example/{'p' * 60_000}'}}" for i in range(20))
    text = native(f"{{exec: [/bin/true], user: a, deps: [{deps}]}}")
    refused_at(tmp_path, text, 3, 3, "unit line", "1 MiB")


@pytest.mark.parametrize("address", ["0177.000.000.001", "127.1", "2130706433", "0x7f.1", "0x7f000001",
                                     "010.0.0.1", "1.2.3.04"])
@pytest.mark.parametrize("where", [
    "version: 1\nhosts: {{a: {{address: '{a}'}}}}\nservices:\n  web: {{exec: [/bin/true], user: a, host: a}}\n",
    "version: 1\nservices:\n  web: {{exec: [/bin/true], user: a, deps: [{{host: '{a}', port: 80}}]}}\n",
    "version: 1\nservices:\n  web: {{exec: [/bin/true], user: a, deps: [{{tcp: '{a}:80'}}]}}\n",
    "version: 1\nservices:\n  web: {{exec: [/bin/true], user: a, deps: [{{http: 'http://{a}/'}}]}}\n",
    "version: 1\nservices:\n  web: {{exec: [/bin/true], user: a, deps: [{{dns: '{a}'}}]}}\n",
])
def test_an_address_the_c_library_reads_as_another_is_refused(tmp_path, address, where):
    text = where.format(a=address)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if address in l)
    for command in ("check", "render"):
        conf, result = run(tmp_path, text, command=command)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"{conf}:{line}:"), result.stderr
        assert "plain dotted decimal" in result.stderr


@pytest.mark.parametrize("address", ["127.0.0.1", "10.248.0.11", "db1.example", "0.0.0.0", "a1b2"])
def test_plain_addresses_and_names_are_kept(tmp_path, address):
    conf, result = run(tmp_path, f"version: 1\nservices:\n  web: {{exec: [/bin/true], user: a, "
                                 f"deps: [{{host: '{address}', port: 80}}]}}\n")
    assert result.exit_code == 0, result.output


# --- bounded cost -------------------------------------------------------------------

def expanding_conf(where: str, services: int = 4000) -> bytes:
    env = ", ".join(f"V{i}: '{'v' * 60}'" for i in range(2000))
    lines = ["version: 1", f"x-env: &env {{{env}}}"]
    if where == "defaults":
        lines.append("defaults: {environment: *env}")
    lines.append("services:")
    own = "" if where == "defaults" else ", environment: *env"
    lines += [f"  s{i}: {{exec: [/bin/true], user: a{own}}}" for i in range(services)]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("where", ["alias", "defaults"])
def test_a_conf_that_expands_too_far_is_one_clear_error(tmp_path, where):
    from test_hostile import unitgen_limited

    data = expanding_conf(where)
    assert len(data) < 400_000
    conf, out, done = unitgen_limited(tmp_path, data)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{conf}:") and "expands to more than 32 MiB" in lines[0]
    assert not out.exists()


def test_placement_on_every_host_counts_each_unit(tmp_path):
    hosts = ", ".join(f"h{i}: {{address: 10.0.{i // 250}.{i % 250 + 1}}}" for i in range(600))
    big = "x" * 100_000
    text = f"version: 1\nhosts: {{{hosts}}}\nservices:\n" + "".join(
        f"  s{i}: {{exec: [/bin/true, '{big}'], user: a, host: '*'}}\n" for i in range(1))
    conf, result = run(tmp_path, text, command="check")
    assert result.exit_code == 2 and "expands to more than" in result.stderr, result.output


def test_a_large_conf_within_the_bound_is_read(tmp_path):
    conf, result = run(tmp_path, expanding_conf("alias", services=100).decode(), command="check")
    assert result.exit_code == 0, result.output[-2000:]


@pytest.mark.parametrize("password", ["s3cret", "p@ss", "a:b@c", "p%23ss"])
def test_a_url_password_never_reaches_diff_or_warnings(tmp_path, password):
    text = native("{exec: [/bin/true], user: a, deps: [{http: 'http://user:" + password + "@db.example/h'},"
                  " {exec: 'curl -f http://user:" + password + "@db.example/'}]}")
    conf, result = run(tmp_path, text, "-o", str(tmp_path / "out"), "--dry-run", "--diff")
    assert result.exit_code == 0, result.output
    assert "ExecStartPre=" in result.stdout and "db.example" in result.stdout
    conf, checked = run(tmp_path, text, command="check")
    assert checked.exit_code == 0 and "holds credentials" in checked.stderr
    for output in (result.output, checked.output):
        assert password not in output and "user:" not in output.replace("user: a", "")


@pytest.mark.parametrize("where", [
    "environment: {DB_URL: 'postgres://app:pw@db/x'}",
    "exec: [/bin/run, '--db=postgres://app:pw@db/x']",
    "script: '/bin/run postgres://app:p/w@db/x'",
    "description: 'see https://u:pw@wiki.example'",
    "systemd: {Service: {Environment: 'X=https://u:pw@h'}}",
])
def test_check_warns_about_credentials_wherever_they_land_in_a_unit(tmp_path, where):
    exec_ = "" if where.startswith(("exec", "script")) else "exec: [/bin/true], "
    warnings = check_warnings(tmp_path, native("{" + exec_ + "user: a, " + where + "}"))
    assert any("credentials" in w for w in warnings), warnings
    assert not any("pw" in w or "p/w" in w for w in warnings), warnings


@pytest.mark.parametrize("name", ["é" * 31, "a b" * 60, "/" * 62])
def test_a_name_whose_escaped_unit_name_is_too_long_is_refused_at_its_place(tmp_path, name):
    text = f'version: 1\nservices:\n  "{name}": {{exec: [/bin/true], user: a}}\n'
    refused_at(tmp_path, text, 3, 3, "255")


def test_the_longest_escaped_unit_name_is_written(tmp_path):
    name = "é" * 30 + "a" * 7  # 30 * 8 + 7 + len(".service") == 255
    conf, result = run(tmp_path, f'version: 1\nservices:\n  "{name}": {{exec: [/bin/true], user: a}}\n',
                       "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    written = [p.name for p in (tmp_path / "out").glob("*.service")]
    assert [len(n) for n in written] == [255]
