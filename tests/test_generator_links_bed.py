"""The generator's links are systemctl enable's (issue 12, proof of item 2).

On a booted bed host (real systemd 252), for every conf the suite renders
into units (the examples, which are also the golden confs, on each of their
hosts, the generator tests' confs, and confs made to stress [Install]), the
real ``unitgen-generator`` runs with the host's name set to the conf's host;
then the units it wrote are copied into /etc/systemd/system and
``systemctl enable``d (systemd's own install logic, over D-Bus). The links
below the generator's directory must be exactly those ``systemctl enable``
made: same names, pointing at the same units.
"""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

from unitgen import config

import test_generator
import test_generator_trust

ROOT = Path(__file__).resolve().parent.parent

INSTALL_STRESS = """\
    version: 1
    services:
      web:
        exec: [/usr/bin/sleep, infinity]
        wanted_by: [multi-user.target, graphical.target]
        systemd:
          Install:
            RequiredBy: a.target b.target
            Alias: ["www.service\\tw3.service", w4.service]
            WantedBy: "graphical.target  default.target"
      api:
        exec: [/usr/bin/sleep, infinity]
        wanted_by: default.target
        description: "Api\\u00a0[Install]\\u3000Alias=systemd-hostnamed.service"
        systemd: {Service: {Nice: "5"}, Unit: {Documentation: "https://x/\\u00a0Alias=y.service"}}
      worker:
        exec: [/usr/bin/sleep, infinity]
        wanted_by: []
"""

WATCHED = """\
    version: 1
    hosts: {h1: {}, h2: {address: 10.248.0.99}}
    services:
      db: {host: h2, exec: [/usr/bin/sleep, infinity], listen: 5432}
      api:
        host: h1
        exec: [/usr/bin/sleep, infinity]
        deps: [{service: db}]
        on_dependency_loss: restart
        systemd: {Install: {Alias: api-alias.service}}
"""


def cases():
    """(name, conf text, host) for every conf the suite renders."""
    found = []
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        text = example.read_text()
        conf = config.load(str(example))
        for host in sorted(conf.hosts) or ["anyhost"]:
            found.append((f"{example.name}@{host}", text, host))
    for name, text in [("DB_AND_API", test_generator.DB_AND_API), ("APP", test_generator_trust.APP),
                       ("DB", test_generator_trust.DB), ("INSTALL_STRESS", INSTALL_STRESS)]:
        found.append((name, textwrap.dedent(text), "anyhost"))
    found.append(("WATCHED@h1", textwrap.dedent(WATCHED), "h1"))
    return found


# Run in the host for one case: the generator as the conf's host, its links;
# then its units enabled by systemctl (after the disabling of any packaged
# unit of the same name, and the removal of every link to those names there:
# Debian's redis-server links redis.service to itself, etcd has etcd2.service),
# every link to them; then everything undone.
SCRIPT = r"""
set -eu
case=/tmp/links-case; gen=/tmp/links-gen
rm -rf "$case" "$gen"; mkdir -p "$case" "$gen"
cat > "$case/conf.yaml"
UNITGEN_CONF_DIR="$case" unshare --uts sh -c 'hostname "$0" && exec unitgen-generator "$1"' "$HOSTNAME_FOR" "$gen"
units=$(cd "$gen" && find . -maxdepth 1 -type f -name '*.service' -printf '%P\n' | sort)
[ -n "$units" ] || { echo "no units"; exit 1; }
echo "== units"; echo "$units"
echo "== generator"
(cd "$gen" && find . -type l -printf '%P %l\n')
systemctl disable $units 2>/dev/null || true
for u in $units; do  # no link to these names is left: a package's alias (etcd2.service), a mask
  find /etc/systemd/system \( -lname "*/$u" -o -lname "$u" \) -delete
  rm -f "/etc/systemd/system/$u"; cp "$gen/$u" "/etc/systemd/system/$u"
done
systemctl daemon-reload
systemctl enable $units 2>&1 | grep -v "^Created symlink" >&2 || true
echo "== systemctl"
find /etc/systemd/system -type l -printf '%P %l\n'
systemctl disable $units 2>&1 | grep -v "^Removed" >&2 || true
for u in $units; do rm -f "/etc/systemd/system/$u"; done
systemctl daemon-reload
echo "== after disable"
find /etc/systemd/system -type l -printf '%P %l\n'
"""


def links_to(listing: str, units: set) -> list:
    """(link below the directory, unit it points to) for links to ``units``."""
    found = []
    for line in listing.splitlines():
        link, target = line.rsplit(" ", 1)
        if target.rsplit("/", 1)[-1] in units:
            found.append((link, target.rsplit("/", 1)[-1]))
    return sorted(found)


def test_the_generators_links_are_systemctl_enables_for_every_conf(make_fleet):
    # examples/conf.yaml has a service nginx: its unit takes Debian's place, not a mask's
    host = make_fleet(["links"], unmask=["nginx.service"])["links"]
    host.boot()
    compared, made = [], []
    for name, text, on in cases():
        done = host.run(["sh", "-c", f"HOSTNAME_FOR={shlex.quote(on)}; {SCRIPT}"], input=text, check=False,
                        timeout=60)
        assert done.returncode == 0, (name, done.stdout, done.stderr)
        sections = dict(part.split("\n", 1) for part in done.stdout.split("== ")[1:])
        units = set(sections["units"].split())
        generated = links_to(sections["generator"], units)
        assert generated, name  # every case makes links
        assert generated == links_to(sections["systemctl"], units), (name, done.stdout, done.stderr)
        assert links_to(sections["after disable"], units) == [], (name, done.stdout)
        compared.append((name, len(generated)))
        made += [link for link, _ in generated]
    # text in a description or a raw value never became a link (INSTALL_STRESS)
    assert not [link for link in made if link.startswith(("systemd-hostnamed", "y.service"))], made
    print("links compared:", compared)
    assert len(compared) >= 10
