#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unitgen contributors
# MIT License (see the repository's pyproject.toml)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: unitgen_apply
short_description: Make a host's systemd match a unitgen conf
description:
  - Runs C(unitgen apply CONF --json) on the target, which renders this host's units
    from the conf, writes only the files unitgen owns, enables and reloads once, starts
    added units, restarts only the units whose file changed, and stops and disables
    units that left the conf; then reads unitgen's JSON result (it never parses the
    human output).
  - C(changed) is true exactly when a unit was (in check mode, would be) added, changed
    or removed. A C(daemon-reload) alone, or a start job for an unchanged unit that was
    not running, is not a change.
  - In check mode it runs C(unitgen apply --dry-run), which writes nothing and asks
    systemd only for states.
  - In diff mode it returns every changed unit's old and new text, with
    C(Environment=) values and URL credentials redacted by unitgen.
  - On failure, the message is unitgen's own one-line error (for a bad conf, its first
    problem, as C(FILE:LINE:COL) then the key and the message; all are in C(problems)),
    or the units whose start, restart or stop failed, with systemd's reason.
version_added: "0.1.0"
author:
  - unitgen contributors
options:
  conf:
    description: The conf on the target, in its place (unitgen records it as the units' source).
    type: path
    default: /etc/unitgen/conf.yaml
  staged:
    description:
      - Read the conf from this file instead, a copy not yet in the place C(conf) names
        (C(unitgen apply STAGED --source CONF)); the role stages the controller's conf this
        way in check mode, so that C(--check --diff) shows what the new conf would change.
    type: path
  host:
    description:
      - The name of this host in the conf's C(hosts:) (C(--host)).
      - Omit it for a conf without C(hosts:), or to let unitgen find this machine by its hostname.
    type: str
  executable:
    description:
      - The C(unitgen) command on the target.
      - By default C(unitgen) on the C(PATH), then C(/opt/unitgen/bin/unitgen).
    type: path
  output:
    description: The directory systemd loads the units from (C(-o)).
    type: path
    default: /etc/systemd/system
  start:
    description: Start added units and restart changed ones; C(false) is C(--no-start).
    type: bool
    default: true
  wait:
    description: Seconds to wait for the start, restart and stop jobs (C(--wait)); unitgen's default when omitted.
    type: float
  settle:
    description: Seconds each unit that came up is watched (C(--settle)); unitgen's default when omitted.
    type: float
  force:
    description: Take over unit files unitgen did not write, or that changed since (C(--force)).
    type: bool
    default: false
  probe:
    description: The probe's path in the units (C(--probe)); by default the one installed with unitgen.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
requirements:
  - unitgen installed on the target (the role C(unitgen.fleet.unitgen) installs it)
  - systemd on the target, and root
notes:
  - A unit still waiting for a dependency on another host when the wait ends is reported
    in C(jobs) with result C(waiting), not as a failure; systemd carries on.
'''

EXAMPLES = r'''
- name: Apply the fleet's conf, this host's part
  unitgen.fleet.unitgen_apply:
    conf: /etc/unitgen/conf.yaml
    host: "{{ inventory_hostname }}"

- name: Apply with a longer wait for slow dependencies
  unitgen.fleet.unitgen_apply:
    host: db1
    wait: 120
  register: applied

- name: Show what would change (run the play with --check --diff)
  unitgen.fleet.unitgen_apply:
    host: "{{ inventory_hostname }}"
  check_mode: true
  diff: true
'''

RETURN = r'''
units:
  description: The units of this host, by what became of each.
  returned: always
  type: dict
  contains:
    added:
      description: Units new on this host (or adopted, an identical file not yet unitgen's).
      type: list
      elements: str
    changed:
      description: Units whose file changed.
      type: list
      elements: str
    removed:
      description: Units that left the conf.
      type: list
      elements: str
    unchanged:
      description: Units left as they were.
      type: list
      elements: str
  sample: {"added": ["worker.service"], "changed": ["api.service"], "removed": [], "unchanged": ["db.service"]}
jobs:
  description: Each job unitgen queued and what became of it (none in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    unit:
      description: The unit.
      type: str
    job:
      description: C(start), C(restart) or C(stop).
      type: str
    result:
      description: C(ok), C(waiting) (its probe still waits for a dependency; systemd carries on) or C(failed).
      type: str
    detail:
      description: systemd's state, and for a failure its reason and the unit's last logged lines.
      type: str
  sample: [{"unit": "api.service", "job": "restart", "result": "ok", "detail": "active (running)"}]
intended:
  description: In check mode, what a real run would ask of systemd.
  returned: in check mode
  type: dict
  sample: {"stop": [], "enable": [], "start": [], "restart": ["api.service"], "reload": true}
takeovers:
  description: Units of packages whose names the conf's services take over.
  returned: always
  type: list
  elements: str
host:
  description: The conf's host whose units these are (null for a conf without C(hosts:)).
  returned: always
  type: str
log:
  description: unitgen's human lines, as C(unitgen apply) prints them.
  returned: always
  type: list
  elements: str
problems:
  description: Every problem of a conf unitgen refused, one line each.
  returned: on failure
  type: list
  elements: str
rc:
  description: unitgen's exit code (0; 1 an operational failure; 2 a bad conf or usage; 3 a bug in unitgen).
  returned: always
  type: int
'''

import json
import os

from ansible.module_utils.basic import AnsibleModule

FALLBACK_DIRS = ['/opt/unitgen/bin']


def unitgen_command(module):
    """The unitgen executable: the one named, else on the PATH, else the role's venv."""
    executable = module.params['executable']
    if executable:
        if not os.access(executable, os.X_OK):
            module.fail_json(msg='%s: no such executable; is unitgen installed on this host?' % executable)
        return executable
    return module.get_bin_path('unitgen', required=True, opt_dirs=FALLBACK_DIRS)


def arguments(module):
    params = module.params
    argv = [unitgen_command(module), 'apply', params['staged'] or params['conf'], '--json', '-o', params['output']]
    if params['staged']:
        argv += ['--source', params['conf']]
    if params['host']:
        argv += ['--host', params['host']]
    if module.check_mode:
        argv.append('--dry-run')
    if module._diff:
        argv.append('--diff')
    if not params['start']:
        argv.append('--no-start')
    for option in ('wait', 'settle'):
        if params[option] is not None:
            argv += ['--' + option, '%g' % params[option]]
    if params['force']:
        argv.append('--force')
    if params['probe']:
        argv += ['--probe', params['probe']]
    return argv


def parse(module, rc, stdout, stderr):
    """unitgen's JSON object (its one line on stdout); a failure without one
    (unitgen missing or broken) fails with the last line unitgen printed."""
    lines = [line for line in stdout.splitlines() if line.startswith('{')]
    if lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    said = [line for line in stderr.splitlines() if line.strip()]
    module.fail_json(msg=said[-1] if said else 'unitgen apply printed no result (exit %d)' % rc,
                     rc=rc, stdout=stdout, stderr=stderr)


def failure_message(data):
    """unitgen's own error line, or the units whose jobs failed."""
    if data.get('error'):
        return data['error']
    failed = ['%s %s: %s' % (job['job'], job['unit'], job['detail'])
              for job in data.get('jobs', []) if job.get('result') == 'failed']
    if failed:
        return 'unitgen apply: %d unit%s failed: %s' % (len(failed), '' if len(failed) == 1 else 's',
                                                        '; '.join(failed))
    return 'unitgen apply failed (exit %d)' % data.get('exit_code', 1)


def ansible_diff(data):
    """Ansible's diff form of unitgen's redacted unit diffs."""
    return [{
        'before_header': item['path'] if item['action'] != 'create' else '/dev/null',
        'after_header': item['path'] if item['action'] != 'remove' else '/dev/null',
        'before': item['before'],
        'after': item['after'],
    } for item in data.get('diff', [])]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            conf=dict(type='path', default='/etc/unitgen/conf.yaml'),
            staged=dict(type='path'),
            host=dict(type='str'),
            executable=dict(type='path'),
            output=dict(type='path', default='/etc/systemd/system'),
            start=dict(type='bool', default=True),
            wait=dict(type='float'),
            settle=dict(type='float'),
            force=dict(type='bool', default=False),
            probe=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    argv = arguments(module)
    rc, stdout, stderr = module.run_command(argv, environ_update={'NO_COLOR': '1'})
    data = parse(module, rc, stdout, stderr)
    for warning in data.get('warnings', []):
        module.warn(warning)
    result = dict(
        changed=bool(data.get('changed')),
        units=data.get('units', {}),
        jobs=data.get('jobs', []),
        takeovers=data.get('takeovers', []),
        host=data.get('host'),
        log=data.get('log', []),
        rc=rc,
        cmd=argv,
    )
    if module.check_mode:
        result['intended'] = data.get('intended')
    if module._diff:
        result['diff'] = ansible_diff(data)
    if rc != 0 or data.get('exit_code'):
        result['problems'] = data.get('problems', [])
        result['stderr'] = stderr
        module.fail_json(msg=failure_message(data), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
