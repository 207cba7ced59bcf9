"""unitgen as a systemd generator on real systemd 252 (tests/bed.py).

A host whose disk has only the conf and the generator link (made by
``unitgen install-generator`` inside it) boots its services in dependency
order; a conf edit and ``systemctl daemon-reload`` add and remove units; a
broken conf leaves out its broken services, is logged, and the boot still
reaches multi-user.target. The services are tests/generator_standin.py.

A bed host has no /dev/kmsg (as in any container), so at boot the
generator's messages go to its stderr, which systemd points at /dev/null.
For the log, the test puts a regular file at the host's /dev/kmsg and runs
daemon-reload: real systemd runs the generator, which writes its records
there. That the kernel turns such records into journal entries is the
kernel's part, out of a container's reach.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from unitgen import gencache

STANDIN = str(Path(__file__).resolve().parent / "generator_standin.py")
GENERATED = "/run/systemd/generator"


def service(name: str, port: int, *, delay: float = 0.0, deps=(), host: str = "g1") -> str:
    """One service of a native conf: a stand-in on ``port``, after ``delay`` s."""
    argv = [sys.executable, STANDIN, name, str(port), str(delay)]
    lines = [f"  {name}:", f"    host: {host}", f"    exec: {json.dumps(argv)}", f"    listen: {port}"]
    if deps:
        lines.append(f"    deps: [{', '.join('{service: %s}' % dep for dep in deps)}]")
    return "\n".join(lines) + "\n"


def conf(*services: str) -> str:
    return "version: 1\nhosts: {g1: {}, g2: {}}\nservices:\n" + "".join(services)


def fragment(*services: str) -> str:
    return "version: 1\nservices:\n" + "".join(services)


def host_with_generator(make_fleet):
    """A powered-off host on whose disk ``unitgen install-generator`` ran."""
    host = make_fleet(["g1"])["g1"]
    host.boot()
    output = host.run(["unitgen", "install-generator"]).stdout
    assert output.startswith("linked   /etc/systemd/system-generators/unitgen -> /"), output
    host.power_cut()
    return host


def properties(host, unit: str, *names: str) -> list:
    return host.systemctl("show", "--value", *(f"--property={n}" for n in names), unit).splitlines()


def events(host) -> dict:
    """{(service, event): [times]} from the stand-ins' log, this boot and before."""
    found: dict = {}
    for line in host.read_file("/var/log/standins.jsonl").splitlines():
        event = json.loads(line)
        found.setdefault((event["service"], event["event"]), []).append(event["time"])
    return found


def test_a_host_with_only_the_conf_boots_its_services_in_dependency_order(make_fleet):
    host = host_with_generator(make_fleet)
    host.write_file("/etc/unitgen/conf.yaml", conf(
        service("db", 7001, delay=0.5),
        service("api", 7002, delay=0.3, deps=["db"]),
        service("elsewhere", 7004, host="g2"),
    ))
    host.write_file("/etc/unitgen/conf.d/web.yaml", fragment(service("web", 7003, deps=["api"])))
    host.boot()  # waits for multi-user.target; a failed unit would raise BootError

    assert host.systemctl("is-active", "db", "api", "web").split() == ["active"] * 3
    assert host.run(["unitgen-probe", "--once", "tcp", "localhost:7001", "tcp", "localhost:7002",
                     "tcp", "localhost:7003"], check=False).returncode == 0
    seen = events(host)
    assert all(len(seen[name, "start"]) == 1 for name in ("db", "api", "web")), seen
    assert seen["db", "listening"][0] < seen["api", "start"][0]
    assert seen["api", "listening"][0] < seen["web", "start"][0]

    assert properties(host, "web.service", "FragmentPath", "SourcePath", "UnitFileState") == [
        f"{GENERATED}/web.service", "/etc/unitgen/conf.d/web.yaml", "generated"]
    assert host.run(["readlink", f"{GENERATED}/multi-user.target.wants/db.service"]).stdout == "../db.service\n"
    assert not host.exists(f"{GENERATED}/elsewhere.service")
    units = [f"{GENERATED}/{name}.service" for name in ("db", "api", "web")]
    verified = host.run(["systemd-analyze", "verify", "--man=no", *units], check=False)
    assert (verified.returncode, verified.stderr) == (0, "")


def test_a_conf_edit_and_daemon_reload_add_and_remove_units(make_fleet):
    host = host_with_generator(make_fleet)
    host.write_file("/etc/unitgen/conf.yaml", conf(service("db", 7001), service("api", 7002, deps=["db"])))
    host.boot()
    host.wait_active("db.service", "api.service")

    host.write_file("/etc/unitgen/conf.yaml", conf(service("db", 7001), service("cache", 7005, deps=["db"])))
    host.systemctl("daemon-reload")
    assert not host.exists(f"{GENERATED}/api.service")
    assert properties(host, "api.service", "LoadState", "ActiveState") == ["not-found", "active"]  # until stopped
    assert properties(host, "cache.service", "LoadState", "FragmentPath") == ["loaded", f"{GENERATED}/cache.service"]
    assert host.exists(f"{GENERATED}/multi-user.target.wants/cache.service")
    host.systemctl("start", "cache.service")
    host.systemctl("stop", "api.service")
    assert host.systemctl("is-active", "cache.service").strip() == "active"

    host.power_cut()
    host.boot()
    assert host.systemctl("is-active", "db", "cache").split() == ["active"] * 2
    assert properties(host, "api.service", "LoadState", "ActiveState") == ["not-found", "inactive"]


def test_a_broken_conf_is_logged_and_the_boot_reaches_multi_user_target(make_fleet):
    host = host_with_generator(make_fleet)
    host.write_file("/etc/unitgen/conf.yaml", conf(
        service("db", 7001),
        service("api", 70000),  # not a port: api is left out, and web, which needs it
        service("web", 7003, deps=["api"]),
        service("cache", 7005),
    ))
    host.write_file("/etc/unitgen/conf.d/extra.yaml", fragment(
        service("cache", 7006),  # defined twice: left out
        service("worker", 7007, deps=["db"]),
    ))
    host.boot()  # reaches multi-user.target, "running" (not degraded): the broken units simply do not exist
    assert host.systemctl("is-system-running").strip() == "running"
    assert host.systemctl("is-active", "db", "worker").split() == ["active"] * 2
    for unit in ("api", "web", "cache"):
        assert properties(host, f"{unit}.service", "LoadState") == ["not-found"]

    host.run(["sh", "-c", ": > /dev/kmsg"])  # a regular file standing in for the device
    host.systemctl("daemon-reload")
    log = host.read_file("/dev/kmsg").splitlines()
    prefix = r"<3>unitgen-generator["
    assert log[0].startswith(prefix) and log[0].endswith("]: /etc/unitgen: 3 problems; left out: api, cache, web")
    problems = [line.split("]: ", 1)[1] for line in log[1:]]
    assert problems == [
        "/etc/unitgen/conf.d/extra.yaml:3:3: services.cache: defined twice: here and at /etc/unitgen/conf.yaml:17:3",
        "/etc/unitgen/conf.yaml:11:13: services.api.listen: 70000 is above the maximum 65535",
        "/etc/unitgen/conf.yaml:16:12: services.web.deps[0].service: no service named 'api' in this conf",
    ]
    assert "/etc/systemd/system-generators/unitgen failed with exit status 1." in host.journal()
    assert host.systemctl("is-system-running").strip() == "running"


def test_a_fifo_and_a_bad_file_name_in_conf_d_neither_block_nor_cost_the_rest(make_fleet):
    """A FIFO in conf.d would block the generator, and PID 1 with it, for 90 s
    (systemd's generator timeout): on real systemd it is left out at once, as
    is a file whose name holds a newline; the others' units are made."""
    host = host_with_generator(make_fleet)
    host.write_file("/etc/unitgen/conf.yaml", conf(service("db", 7001)))
    host.write_file("/etc/unitgen/conf.d/web.yaml", fragment(service("web", 7003, deps=["db"])))
    host.boot()
    assert host.systemctl("is-active", "db", "web").split() == ["active"] * 2
    host.run(["mkfifo", "/etc/unitgen/conf.d/fifo.yaml"])
    host.run(["sh", "-c", 'printf "version: 1\\nservices: {}\\n" > "/etc/unitgen/conf.d/bad\nname.yaml"'])
    host.run(["sh", "-c", ": > /dev/kmsg"])
    host.systemctl("daemon-reload")  # h.run's timeout (30 s) is far below the 90 s a blocked generator takes
    log = [line.split("]: ", 1)[1] for line in host.read_file("/dev/kmsg").splitlines()]
    assert log[0] == ("/etc/unitgen: 2 problems; left out: the file /etc/unitgen/conf.d/bad\\nname.yaml, "
                      "the file /etc/unitgen/conf.d/fifo.yaml"), log
    assert log[1].startswith("/etc/unitgen/conf.d/bad\\nname.yaml:1:1: left out: its name ")
    assert log[2].startswith("/etc/unitgen/conf.d/fifo.yaml:1:1: left out: not a regular file")
    for unit in ("db", "web"):
        assert properties(host, f"{unit}.service", "LoadState", "ActiveState") == ["loaded", "active"]
    assert host.exists(f"{GENERATED}/web.service") and host.exists(f"{GENERATED}/multi-user.target.wants/db.service")


def test_a_fleet_sized_conf_is_cached_by_its_own_service_and_a_stale_cache_is_never_read(make_fleet):
    """A conf of 256 KiB or more (here: padded with comments) gets
    unitgen-generator-cache.service and .path (unitgen/gencache.py): the
    service runs at boot and writes /var/cache/unitgen/generator.cache; the
    next daemon-reload takes this host's units from it (a Description put
    into the cached unit by hand shows in systemd); after a conf edit the
    edited conf's units are what systemd loads, never the stale entry."""
    import time

    host = host_with_generator(make_fleet)
    padding = "".join(f"# padding line {i:06d} {'x' * 40}\n" for i in range(5000))  # about 300 KiB
    text = conf(service("db", 7001), service("api", 7002, deps=["db"])) + padding
    host.write_file("/etc/unitgen/conf.yaml", text)
    host.boot()
    host.wait_active("db.service", "api.service")
    cache = f"{gencache.CACHE_DIR}/{gencache.CACHE_FILE}"

    def cached():
        """The cache's fields once the cache service has written it."""
        end = time.monotonic() + 120
        while time.monotonic() < end:
            read = host.run(["base64", "-w0", cache], check=False)  # the live root (host.exists() looks at the disk)
            if read.returncode == 0 and read.stdout:
                return gencache.fields(base64.b64decode(read.stdout))
            time.sleep(0.5)
        raise AssertionError(f"{cache} was not written: {host.journal('unitgen-generator-cache.service')}")

    fields = cached()
    assert properties(host, "unitgen-generator-cache.path", "ActiveState") == ["active"]
    units, at = {}, 3  # format, key, count, then each unit: name, service, text, link count, links
    for _ in range(int(fields[2])):
        units[fields[at]] = at
        at += 4 + int(fields[at + 3])
    assert sorted(units) == ["api.service", "db.service", "unitgen-generator-cache.path",
                             "unitgen-generator-cache.service"]
    api = units["api.service"] + 2
    fields[api] = fields[api].replace("\nDescription=", "\nDescription=from the cache: ", 1)
    host.write_file(cache, gencache.encode(fields))  # root's, mode 644: a cache the generator trusts
    host.run(["systemctl", "daemon-reload"])
    assert properties(host, "api.service", "Description")[0].startswith("from the cache: ")

    # A conf edit: whether or not the cache service has run again, the stale entry is never read.
    host.run(["sed", "-i", "s/# padding line 000000/# edited line 000000/", "/etc/unitgen/conf.yaml"])
    host.run(["systemctl", "daemon-reload"])
    assert not properties(host, "api.service", "Description")[0].startswith("from the cache: ")
    assert host.systemctl("is-active", "db", "api").split() == ["active"] * 2
