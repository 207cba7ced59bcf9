"""Target: validation on construction, immutability, labels and redaction."""

import pytest

from unitgen_probe import Target, UsageError, parse_argv
from unitgen_probe.targets import accepts, printable, redact


@pytest.mark.parametrize("kind, spec", [
    ("tcp", "db.example:5432"),
    ("tcp", "10.0.0.11:5432"),
    ("tcp", "[::1]:80"),
    ("tcp", "[fe80::1%eth0]:22"),
    ("tcp", "host_with_underscore.internal.:1"),
    ("tcp", "bücher.example:65535"),
    ("http", "http://localhost:8080/healthz"),
    ("http", "https://user:p%40ss@[::1]/a?b=c#frag"),
    ("http", "HTTPS://Example.COM/ü/'\"$\\%41"),
    ("unix", "/run/app.sock"),
    ("unix", "@abstract name"),
    ("unix", "-relative path with spaces"),
    ("dns", "cache.example"),
    ("exec", "pg_isready -h db -q"),
    ("exec", "-x\nmulti line"),
])
def test_valid_specs(kind, spec):
    target = Target(kind, spec)
    assert (target.kind, target.spec) == (kind, spec)


@pytest.mark.parametrize("kind, spec, words", [
    ("tcp", "db.example", "port is missing"),
    ("tcp", "db.example:", "port must be a number from 1 to 65535"),
    ("tcp", "db.example:0", "from 1 to 65535"),
    ("tcp", "db.example:65536", "from 1 to 65535"),
    ("tcp", "db.example:http", "from 1 to 65535"),
    ("tcp", "db.example:٣", "from 1 to 65535"),  # a digit, but not an ASCII one
    ("tcp", "::1:80", "put an IPv6 address in brackets"),
    ("tcp", "[::1]80", "expected [V6ADDR]:PORT"),
    ("tcp", "[not-v6]:80", "is not an IPv6 address"),
    ("tcp", "db example:80", "not a valid host name"),
    ("tcp", "-db:80", "not a valid host name"),
    ("tcp", "a..b:80", "not a valid host name"),
    ("tcp", ":80", "not a valid host name"),
    ("tcp", "", "the spec is empty"),
    ("http", "ftp://host/", "must start with http:// or https://"),
    ("http", "http:/host/", "must start with http:// or https://"),
    ("http", "http:///path", "not a valid host name"),
    ("http", "http://host:0/", "port must be a number"),
    ("http", "http://host:99999/", "port must be a number"),
    ("http", "http://host/a b", "contains a space"),
    ("http", "http://host/a\tb", "contains a control character"),
    ("http", "http://[zz]/", "IPv6"),
    ("unix", "/" + "x" * 107, "longer than 107 bytes"),
    ("unix", "a\0b", "NUL"),
    ("dns", "no spaces.example", "not a valid host name"),
    ("dns", "x" * 64 + ".example", "not a valid host name"),
    ("exec", "  \n ", "the command is empty"),
    ("ftp", "host:21", "unknown kind"),
])
def test_malformed_specs_are_usage_errors(kind, spec, words):
    with pytest.raises(UsageError, match=None) as error:
        Target(kind, spec)
    assert words in str(error.value)


@pytest.mark.parametrize("options, words", [
    ({"status": "200"}, "--status applies to http targets only"),
    ({"body": "ok"}, "--body applies to http targets only"),
    ({"ca_file": "/ca.pem"}, "--ca-file applies to http targets only"),
    ({"insecure": True}, "--insecure applies to http targets only"),
])
def test_http_options_on_other_kinds(options, words):
    with pytest.raises(UsageError) as error:
        Target("tcp", "db:1", **options)
    assert words in str(error.value)


def test_tls_options_need_https():
    with pytest.raises(UsageError, match="--ca-file applies to https URLs only"):
        Target("http", "http://h/", ca_file="/ca.pem")
    with pytest.raises(UsageError, match="--insecure applies to https URLs only"):
        Target("http", "http://h/", insecure=True)
    with pytest.raises(UsageError, match="exclude each other"):
        Target("http", "https://h/", ca_file="/ca.pem", insecure=True)
    assert Target("http", "https://h/", ca_file="/ca.pem").ca_file == "/ca.pem"


@pytest.mark.parametrize("status, tokens", [
    ("200", ("200",)),
    ("200,204", ("200", "204")),
    (" 2XX , 301,2xx", ("2xx", "301")),
    ([200, "3xx"], ("200", "3xx")),
])
def test_status_lists(status, tokens):
    assert Target("http", "http://h/", status=status).status == tokens


@pytest.mark.parametrize("status", ["", "600", "99", "6xx", "2x", "abc", "200,,204", [True]])
def test_bad_status_lists(status):
    with pytest.raises(UsageError, match="--status"):
        Target("http", "http://h/", status=status)


def test_accepts_codes_and_classes():
    assert accepts(None, 200) and accepts(None, 299) and not accepts(None, 301)
    assert accepts(("2xx", "301"), 301) and not accepts(("2xx", "301"), 302)
    assert accepts(("503",), 503) and not accepts(("503",), 200)


@pytest.mark.parametrize("timeout", [0, -1, "nan", "inf", float("inf"), "soon", True, None.__class__])
def test_bad_timeouts(timeout):
    with pytest.raises(UsageError, match="--timeout"):
        Target("tcp", "h:1", timeout=timeout)


def test_timeouts_are_seconds():
    assert Target("tcp", "h:1", timeout="2.5").timeout == 2.5
    assert Target("tcp", "h:1", timeout=2) == Target("tcp", "h:1", timeout=2.0)


def test_bad_body_regex_and_labels():
    with pytest.raises(UsageError, match="bad regular expression"):
        Target("http", "http://h/", body="(unclosed")
    with pytest.raises(UsageError, match="control character"):
        Target("tcp", "h:1", name="two\nlines")
    with pytest.raises(UsageError, match="the label is empty"):
        Target("tcp", "h:1", name=" ")


def test_targets_are_immutable_values():
    target = Target("tcp", "db:5432", name="db")
    with pytest.raises(AttributeError):
        target.spec = "other:1"
    with pytest.raises(AttributeError):
        del target.name
    assert target == Target("tcp", "db:5432", name="db")
    assert target != Target("tcp", "db:5432", name="other")
    assert len({target, Target("tcp", "db:5432", name="db")}) == 1


def test_label_and_display():
    assert Target("tcp", "10.0.0.11:5432", name="db").label == "db"
    assert Target("tcp", "10.0.0.11:5432", name="db").display == "db (10.0.0.11:5432)"
    assert Target("tcp", "10.0.0.11:5432").label == "10.0.0.11:5432"
    assert Target("exec", "a\nb").display == "a\\nb"


def test_credentials_never_shown():
    target = Target("http", "https://admin:s3cr%40t@api.example/health", name="api")
    for text in (target.label, target.display, target.safe_spec, repr(target)):
        assert "s3cr" not in text and "admin" not in text
    assert Target("http", "http://u:p@h/x").label == "http://h/x"
    assert "hunter2" not in Target("exec", "curl -f http://bob:hunter2@h/").display


@pytest.mark.parametrize("text, shown", [
    ("http://u:p@h/x", "http://h/x"),
    ("http://u:p@ss@h/x", "http://h/x"),  # an unencoded @ in the password
    ("https://token@h", "https://h"),
    ("curl http://a:b@h/ && curl HTTPS://c:d@i/", "curl http://h/ && curl HTTPS://i/"),
    ("mail user@example.com", "mail user@example.com"),
    # An @ after a / ? or # may end a password that held it unencoded: the
    # safe side is to remove all up to it (a URL the probe accepts has none).
    ("http://u:pa/ss@h/x", "http://h/x"),
    ("http://u:pa#ss@h/", "http://h/"),
    ("http://u:pa?ss@h/", "http://h/"),
    ("'http://u:p\u2028a\u00a0ss@h/' x@y", "'http://h/' x@y"),  # only ASCII white space ends a word
    ("http://h/path@x", "http://x"),
])
def test_redact(text, shown):
    assert redact(text) == shown


@pytest.mark.parametrize("argv", [
    ["http://admin:s3cr3t@db/"],  # the kind forgotten
    ["http", "http://admin:s3cr3t@db/", "--name", "a", "--name", "b"],
    ["http", "http://admin:s3cr3t@db:0/"],
    ["http", "http://admin:s3cr3t@db/ x"],
    ["http", "ftp://admin:s3cr3t@db/"],
    ["--timeout", "http://admin:s3cr3t@db/", "tcp", "a:1"],
    # unencoded / # ? or a space in the password: the host would end early
    ["http", "http://admin:s3cr3t/s3cr3t@db/"],
    ["http", "http://admin:s3cr3t#s3cr3t@db/"],
    ["http", "https://admin:s3cr3t?s3cr3t@db/"],
    ["http", "http://admin:s3cr3t s3cr3t@db/"],
    ["http", "http://admin:s3cr3t/s3cr3t@db/", "--insecure"],
    ["http", "http://admin:s3cr3t@db/x@y"],
    ["http", "http://admin:s3cr3t/@[::1/"],
])
def test_usage_errors_never_quote_credentials(argv):
    with pytest.raises(UsageError) as error:
        parse_argv(argv)
    assert "s3cr3t" not in str(error.value) and "admin" not in str(error.value)
    assert "cr3t" not in str(error.value) and "s3" not in str(error.value)


@pytest.mark.parametrize("argv", [["tcp", "db\nforged: line:1"], ["unix", "x" * 200 + "\r\x1b[2J"], ["tcp\n"],
                                  ["http", "http://h/\x1b[2J"], ["--deadline", "1\n2", "tcp", "a:1"]])
def test_a_usage_error_is_one_line_whatever_it_quotes(argv):
    with pytest.raises(UsageError) as error:
        parse_argv(argv)
    assert printable(str(error.value)) == str(error.value)


@pytest.mark.parametrize("spec", [
    "http://localhost:8080/healthz", "https://user:p%40ss@[::1]/a?b=c#frag", "HTTPS://Example.COM/ü/'\"$\\%41",
    "http://h", "http://h:/", "http://h:0080/x?", "http://u@h/", "http://u:@h#", "http://U:P@H.Example:1/P?Q#F",
    "http://[fe80::1%25Eth0]:8/", "http://[::FFFF:10.0.0.1]/a/b?c?d#e#f",
    "http://bücher.example/", "http://h/a;b?c;d", "http://h?x", "http://h#x", "http://1.2.3.4:65535",
])
def test_urls_split_as_urlsplit_splits_them(spec):
    """The probe splits URLs by hand (no urllib.parse at start-up); unitgen reads
    the same fields as from urlsplit, so they must be the same values."""
    from urllib.parse import urlsplit

    url, expected = Target("http", spec).address, urlsplit(spec)
    for field in ("scheme", "netloc", "path", "query", "fragment", "username", "password", "hostname", "port"):
        assert getattr(url, field) == getattr(expected, field), field
