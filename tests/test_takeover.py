"""takeover.find on a system laid out below a scratch root, as Debian's packages lay it out."""

from __future__ import annotations

import os

from unitgen import takeover

VENDOR = "usr/lib/systemd/system"
ADMIN = "etc/systemd/system"


def layout(root, files=(), links=()):
    """``files``: {relative path: text}; ``links``: {relative path: target}; /lib -> usr/lib (merged /usr)."""
    for relative in (VENDOR, ADMIN, "run/systemd/system"):
        os.makedirs(root / relative, exist_ok=True)
    if not (root / "lib").exists():
        os.symlink("usr/lib", root / "lib")
    for relative, text in dict(files).items():
        (root / relative).write_text(text)
    for relative, target in dict(links).items():
        os.symlink(target, root / relative)


REDIS_SERVER = "[Service]\nExecStart=/usr/bin/redis-server\n[Install]\nWantedBy=multi-user.target\nAlias=redis.service\n"


def test_an_enabled_alias_a_same_named_package_unit_and_an_alias_only_declared(tmp_path):
    layout(tmp_path, files={f"{VENDOR}/redis-server.service": REDIS_SERVER,
                            f"{VENDOR}/nginx.service": "[Service]\nExecStart=/usr/sbin/nginx\n",
                            f"{VENDOR}/other.service": "[Install]\nAlias=cache.service\n"},
           links={f"{ADMIN}/redis.service": "/lib/systemd/system/redis-server.service"})
    found = takeover.find(["redis.service", "nginx.service", "cache.service", "web.service"], str(tmp_path))
    assert sorted(found) == ["cache.service", "nginx.service", "redis.service"]
    redis, nginx, cache = found["redis.service"], found["nginx.service"], found["cache.service"]
    assert (redis.unit, redis.link, redis.same_name, redis.to_disable) == (
        "redis-server.service", "/etc/systemd/system/redis.service", False, "redis-server.service")
    assert redis.describe() == "redis.service takes over its alias /etc/systemd/system/redis.service -> " \
                               "redis-server.service"
    assert (nginx.unit, nginx.link, nginx.same_name, nginx.to_disable) == (
        "nginx.service", None, True, "nginx.service")
    assert nginx.path in ("/lib/systemd/system/nginx.service", "/usr/lib/systemd/system/nginx.service")
    assert (cache.unit, cache.declared_only, cache.to_disable) == ("other.service", True, None)
    assert takeover.links_to_replace(found, "/etc/systemd/system") == ["redis.service"]


def test_a_link_to_a_package_unit_of_the_same_name_is_replaced_too(tmp_path):
    layout(tmp_path, files={f"{VENDOR}/nginx.service": ""},
           links={f"{ADMIN}/nginx.service": "/lib/systemd/system/nginx.service"})
    (nginx,) = takeover.find(["nginx.service"], str(tmp_path)).values()
    assert (nginx.same_name, nginx.link, nginx.to_disable) == (True, "/etc/systemd/system/nginx.service",
                                                               "nginx.service")
    assert nginx.describe() == "nginx.service takes over the link /etc/systemd/system/nginx.service -> " \
                               "/lib/systemd/system/nginx.service"
    assert takeover.links_to_replace({"nginx.service": nginx}, "/etc/systemd/system") == ["nginx.service"]


def test_ours_a_mask_and_an_alias_of_ours_are_not_takeovers(tmp_path):
    layout(tmp_path, files={f"{VENDOR}/redis-server.service": REDIS_SERVER, f"{ADMIN}/redis.service": "ours",
                            f"{ADMIN}/web.service": "ours", f"{VENDOR}/gone.service": ""},
           links={f"{ADMIN}/www.service": "/etc/systemd/system/web.service", f"{ADMIN}/gone.service": "/dev/null"})
    ours = ["/etc/systemd/system/redis.service", "/etc/systemd/system/web.service"]
    assert takeover.find(["redis.service", "www.service", "gone.service"], str(tmp_path), ours=ours) == {}
    # not ours: a file in /etc is the output directory's business (it refuses it), not a package's
    assert takeover.find(["web.service"], str(tmp_path)) == {}


def test_what_hides_a_generated_unit(tmp_path):
    layout(tmp_path, files={f"{ADMIN}/api.service": "", f"{VENDOR}/nginx.service": ""},
           links={f"{ADMIN}/redis.service": "/lib/systemd/system/redis-server.service",
                  "run/systemd/system/db.service": "/dev/null"})
    root = str(tmp_path)
    assert takeover.shadowing("redis.service", root).startswith(
        "/etc/systemd/system/redis.service is an alias of redis-server.service: systemctl disable")
    assert takeover.shadowing("api.service", root) == "/etc/systemd/system/api.service is another unit file " \
                                                     "of that name: remove it"
    assert takeover.shadowing("db.service", root) == "/run/systemd/system/db.service masks it"
    assert takeover.shadowing("nginx.service", root) is None  # /lib ranks below the generator's directory
