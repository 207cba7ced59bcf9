"""check(): one attempt against real servers on loopback, for every kind."""

import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from probe_helpers import (WAIT, ClosedPort, HttpServer, answer, make_certificates, open_port, probe_command,
                           probe_env, wait_until)

from unitgen_probe import Result, Target, check


def test_tcp_open_and_closed():
    with open_port() as port:
        result = check(Target("tcp", f"127.0.0.1:{port.port}"))
        assert result.ok and result.reason == "connected"
        assert result.latency >= 0
        wait_until(lambda: port.accepted == 1)
    with ClosedPort() as port:
        result = check(Target("tcp", f"127.0.0.1:{port.port}"))
    assert not result.ok and result.reason == "connection refused (port closed)"


def test_tcp_ipv6_literal():
    try:
        port = open_port("::1")
    except OSError:
        pytest.skip("no IPv6 loopback address here")
    with port:
        assert check(Target("tcp", f"[::1]:{port.port}")).reason == "connected"


def test_tcp_name_says_which_address_answered():
    with open_port() as port:
        result = check(Target("tcp", f"localhost:{port.port}"))
    # localhost may resolve to ::1 first, which refuses: every address is tried
    assert result.ok and result.reason == "connected to 127.0.0.1"


def test_unix_sockets(tmp_path):
    path = tmp_path / "app.sock"
    assert check(Target("unix", str(path))).reason == "no such file"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        assert check(Target("unix", str(path))).reason == "connection refused (nobody listening on the socket)"
        server.listen(1)
        assert check(Target("unix", str(path))).ok
    finally:
        server.close()
    name = f"unitgen-probe-test-{os.getpid()}"
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0" + name)
    abstract.listen(1)
    try:
        assert check(Target("unix", "@" + name)).ok
    finally:
        abstract.close()
    assert not check(Target("unix", "@" + name)).ok


def test_unix_permission_denied():
    directory = tempfile.mkdtemp(prefix="unitgen-probe-")
    os.chmod(directory, 0o755)  # reachable by the unprivileged user below
    path = os.path.join(directory, "app.sock")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(path)
        server.listen(1)
        os.chmod(path, 0)
        if os.geteuid() == 0:  # root is never denied: ask as nobody
            as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            if shutil.which("setpriv") is None or subprocess.run(
                    [*as_nobody, sys.executable, "-c", "pass"], capture_output=True).returncode:
                pytest.skip("running as root, and this Python cannot run as another user")
            done = subprocess.run([*as_nobody, *probe_command("--once", "unix", path)],
                                  env=probe_env(), capture_output=True, text=True, timeout=WAIT)
            assert done.returncode == 1 and done.stdout.endswith(f"{path}: permission denied\n"), done
        else:
            assert check(Target("unix", path)).reason == "permission denied"
    finally:
        server.close()
        shutil.rmtree(directory)


def test_dns_resolves():
    result = check(Target("dns", "localhost"))
    assert result.ok and result.reason.startswith("resolves to ")
    assert "127.0.0.1" in result.reason or "::1" in result.reason


# --- exec ------------------------------------------------------------------

def test_exec_exit_status_and_last_output_line():
    assert check(Target("exec", "true")).reason == "exit status 0"
    result = check(Target("exec", "echo starting; echo 'db: no response' >&2; exit 3"))
    assert not result.ok and result.reason == "exit status 3: db: no response"
    assert check(Target("exec", "kill -9 $$")).reason == "killed by SIGKILL"
    assert check(Target("exec", "no-such-command-here")).reason.startswith("exit status 127: ")


def test_exec_output_is_bounded():
    result = check(Target("exec", "head -c 5000000 /dev/zero | tr '\\0' x; exit 1"), timeout=20)
    assert not result.ok and result.reason.startswith("exit status 1: xxx") and len(result.reason) < 250


def _gone(pid):
    """Whether process *pid* has ended (a zombie counts: it runs no more)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_exec_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    command = f"sleep 60 & echo $! > {pidfile}; sleep 60"
    result = check(Target("exec", command, timeout=0.5))
    assert not result.ok and result.reason == "killed after 0.5 s timeout"
    background = int(pidfile.read_text())
    wait_until(lambda: _gone(background), what="the background sleep to be killed")


def test_exec_that_exits_while_a_child_keeps_the_output_open(tmp_path):
    pidfile = tmp_path / "pid"
    result = check(Target("exec", f"sleep 30 & echo $! > {pidfile}; echo done"), timeout=20)
    assert result.ok and result.reason == "exit status 0"
    os.kill(int(pidfile.read_text()), 9)  # ours: started by the command above


def test_exec_does_not_pass_the_notify_socket(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    assert check(Target("exec", 'test -z "$NOTIFY_SOCKET"')).ok


# --- http --------------------------------------------------------------------

def test_http_statuses():
    with HttpServer(answer(200)) as server:
        assert check(Target("http", server.url + "/health")).reason == "HTTP status 200"
        assert server.requests[0][0] == "/health"
    with HttpServer(answer(503)) as server:
        assert check(Target("http", server.url)).reason == "HTTP status 503"
        assert check(Target("http", server.url, status="503")).ok
        assert check(Target("http", server.url, status="5xx,200")).ok
        assert not check(Target("http", server.url, status="200,500")).ok


def test_http_request_shape():
    with HttpServer(answer(200)) as server:
        check(Target("http", server.url + "/a/ü b%20c?x=1".replace(" ", "%20")))
        path, headers = server.requests[0]
    assert path == "/a/%C3%BC%20b%20c?x=1"
    assert headers["Host"] == f"127.0.0.1:{server.port}"
    assert headers["User-Agent"] == "unitgen-probe" and headers["Connection"] == "close"


def _redirects(routes):
    """Answers by path: a str is a redirect target, an int a status."""
    def respond(handler):
        to = routes[handler.path]
        return (302, {"Location": to}, b"") if isinstance(to, str) else (to, {}, b"ok")
    return respond


def test_http_follows_redirects():
    with HttpServer(_redirects({"/": "/two", "/two": "/three?x", "/three?x": 200})) as server:
        result = check(Target("http", server.url + "/"))
    assert result.ok and result.reason == f"HTTP status 200 after 2 redirects, at {server.url}/three?x"


def test_http_redirect_failures():
    with HttpServer(_redirects({"/a": "/b", "/b": "/a", "/bad": "ftp://x/", "/gone": 404})) as server:
        assert check(Target("http", server.url + "/a")).reason == f"redirect loop (back to {server.url}/a)"
        assert check(Target("http", server.url + "/bad")).reason.startswith("redirect to an unusable URL")
        with_404 = check(Target("http", server.url + "/gone"))
    assert with_404.reason == "HTTP status 404"
    chain = {f"/{i}": f"/{i + 1}" for i in range(20)}
    with HttpServer(_redirects(chain)) as server:
        assert check(Target("http", server.url + "/0")).reason == "too many redirects (more than 10)"


def test_http_accepted_redirect_is_not_followed():
    with HttpServer(_redirects({"/": "/elsewhere"})) as server:
        assert check(Target("http", server.url + "/", status="302")).ok
        assert len(server.requests) == 1


def test_http_body_regex():
    with HttpServer(answer(200, b'{"status": "UP"}')) as server:
        assert check(Target("http", server.url, body='"status": "UP"')).ok
        result = check(Target("http", server.url, body="DOWN|^$"))
    assert result.reason == "HTTP status 200 but the body did not match /DOWN|^$/"


def _endless(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.end_headers()
    chunk = b"x" * 65536
    try:
        while True:
            handler.wfile.write(chunk)
    except OSError:
        return None


def test_http_endless_body_is_read_only_up_to_a_bound():
    with HttpServer(_endless) as server:
        assert check(Target("http", server.url), timeout=20).ok  # no --body: the body is not read
        result = check(Target("http", server.url, body="never"), timeout=20)
    assert result.reason == "HTTP status 200 but the body did not match /never/"


def _drip(handler):
    handler.send_response(200)
    handler.end_headers()
    try:
        for _ in range(100):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.1)
    except OSError:
        return None


def test_http_slow_answers_time_out():
    def slow(handler):
        time.sleep(3)
        return 200, {}, b"late"
    with HttpServer(slow) as server:
        assert check(Target("http", server.url), timeout=0.5).reason == \
            "timed out after 0.5 s waiting for the response"
    with HttpServer(_drip) as server:
        # each byte comes quickly; the whole body does not, and the budget is for the whole
        assert check(Target("http", server.url, body="y"), timeout=0.5).reason == \
            "timed out after 0.5 s reading the body"


def test_http_hostile_headers():
    def long_line(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    def many(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 150 + b"\r\n")
    def garbage(handler):
        handler.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n")
    with HttpServer(long_line) as server:
        assert check(Target("http", server.url)).reason == "bad HTTP response: a header line is too long"
    with HttpServer(many) as server:
        assert check(Target("http", server.url)).reason == "bad HTTP response: got more than 100 headers"
    with HttpServer(garbage) as server:
        assert check(Target("http", server.url)).reason == "not an HTTP response"


def test_http_connection_closed_without_answer():
    with open_port() as port:  # accepts, then closes at once
        result = check(Target("http", f"http://127.0.0.1:{port.port}/"))
    assert result.reason in ("the server closed the connection without answering", "connection reset")
    with ClosedPort() as port:
        assert check(Target("http", f"http://127.0.0.1:{port.port}/")).reason == "connection refused (port closed)"


def test_http_credentials_are_sent_not_shown():
    with HttpServer(answer(401)) as server:
        url = server.url.replace("://", "://admin:s3cr%40t@") + "/private"
        result = check(Target("http", url))
        _, headers = server.requests[0]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"admin:s3cr@t").decode()
    assert result.reason == "HTTP status 401" and "s3cr" not in repr(result)


def test_http_credentials_stay_with_their_origin():
    with HttpServer(answer(200)) as other, \
            HttpServer(_redirects({"/": other.url.replace("://", "://x:leaked@") + "/in-url",
                                   "/away": other.url + "/away"})) as first:
        authed = first.url.replace("://", "://u:pw@")
        result = check(Target("http", authed + "/"))
        assert result.ok and "leaked" not in result.reason and "pw" not in result.reason
        assert other.requests[-1][1]["Authorization"] == "Basic " + base64.b64encode(b"x:leaked").decode()
        assert check(Target("http", authed + "/away")).ok
        assert "Authorization" not in other.requests[-1][1]  # another origin: not sent


# --- TLS ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


def test_tls_with_a_private_ca(certificates):
    ca, cert, key = certificates
    with HttpServer(answer(200), tls=(cert, key)) as server:
        unverified = check(Target("http", server.url))
        assert not unverified.ok
        assert unverified.reason.startswith("TLS error: certificate verify failed: ")
        assert "self" in unverified.reason or "issuer" in unverified.reason
        assert check(Target("http", server.url, ca_file=ca)).reason == "HTTP status 200"
        assert check(Target("http", server.url, insecure=True)).ok
        by_name = server.url.replace("127.0.0.1", "localhost")
        assert check(Target("http", by_name, ca_file=ca)).ok


def test_tls_failures(certificates, tmp_path):
    ca, cert, key = certificates
    with HttpServer(answer(200), tls=(cert, key), host="127.0.0.2") as server:
        mismatch = check(Target("http", server.url, ca_file=ca))
    assert mismatch.reason.startswith("TLS error: certificate verify failed: ")
    assert "127.0.0.2" in mismatch.reason
    with HttpServer(answer(200)) as plain:
        result = check(Target("http", plain.url.replace("http:", "https:"), ca_file=ca))
    assert result.reason == "TLS error: wrong version number (is the server speaking plain HTTP?)"
    missing = check(Target("http", "https://127.0.0.1:1/", ca_file=str(tmp_path / "none.pem")))
    assert missing.reason == f"TLS error: cannot load the CA file {tmp_path / 'none.pem'}: no such file"


def test_tls_handshake_that_never_comes():
    with open_port() as port:
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts in the kernel, never speaks
        try:
            url = f"https://127.0.0.1:{silent.getsockname()[1]}/"
            assert check(Target("http", url), timeout=0.5).reason == \
                "timed out after 0.5 s in the TLS handshake"
        finally:
            silent.close()
        del port


def test_check_is_safe_from_threads():
    with open_port() as port:
        target = Target("tcp", f"localhost:{port.port}")
        results = []
        threads = [threading.Thread(target=lambda: results.append(check(target))) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 20 and all(r.ok for r in results)


def test_results_are_immutable_values():
    result = Result(True, "connected", 0.5)
    assert result == Result(True, "connected", 0.5) and hash(result) == hash(Result(True, "connected", 0.5))
    with pytest.raises(AttributeError):
        result.ok = False
    assert repr(result) == "Result(ok=True, reason='connected', latency=0.5)"


def _raw(data):
    """A handler that writes *data* as the whole response, then closes."""
    def respond(handler):
        handler.wfile.write(data)
    return respond


def test_http_response_framing():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nsta\r\n6\r\ntus UP\r\n0\r\n\r\n"
    with HttpServer(_raw(chunked)) as server:
        assert check(Target("http", server.url, body="status UP")).ok  # chunks joined, no framing in the body
        assert not check(Target("http", server.url, body="3;x=y")).ok
    cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort"
    with HttpServer(_raw(cut)) as server:
        assert check(Target("http", server.url)).ok  # no --body: the body is not read
        assert check(Target("http", server.url, body="x")).reason == "the connection closed in the middle of the body"
    with HttpServer(_raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")) as server:
        assert check(Target("http", server.url, body="x")).reason == "the connection closed in the middle of the body"
    sized = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nUPDOWN"
    with HttpServer(_raw(sized)) as server:  # only Content-Length bytes are the body
        assert check(Target("http", server.url, body="^UP$")).ok
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    with HttpServer(_raw(early)) as server:  # informational answers come before the final one
        assert check(Target("http", server.url)).reason == "HTTP status 204"
    latin = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=\"ISO-8859-1\"\r\n\r\n\xe9t\xe9"
    with HttpServer(_raw(latin)) as server:
        assert check(Target("http", server.url, body="^\u00e9t\u00e9$")).ok
    for garbage in (b"\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/1.1 99 Low\r\n\r\n", b"HTTP/1.1\r\n\r\n"):
        with HttpServer(_raw(garbage)) as server:
            assert check(Target("http", server.url)).reason == "not an HTTP response", garbage
